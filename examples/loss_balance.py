"""How close a trained generator is to its content target, and what pulls it away: the
measurements behind docs/fidelity.md's finding on the adversarial weight.

For a training checkpoint (``dwsfusion train``'s ``state.pt``, critics included):

1. The content and dual-weight terms of its best generator and of the authors' release, on
   the whole images of the 25 TNO and 50 RoadScene pairs (eval mode): how well each fits
   max(ir, vi), the target every content term measures against; and how far the weight maps
   W_ir, W_vi are from sigmoid of their input (0: the weight nets' U-Net branch adds nothing).
2. On one batch of 16 random 240x240 RoadScene crops (train mode, as a training step sees
   it): the L2 norm of the generator's gradient from each weighted term — 10 x content,
   dual-weight, 0.1 x adversarial with the checkpoint's trained critics, and 0.1 x
   adversarial with the release's critic head (a linear layer over the flattened features,
   drawn anew at random in every call; the mean over ``--draws`` draws).

Writes benchmarks/results/loss_balance_<name>.json. About a minute on 2 CPUs.

Run: python examples/loss_balance.py --checkpoint runs/reproduce/train/reproduce/checkpoint_*/state.pt --name NAME
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import SHARED, write_result  # noqa: E402

from dwsfusion.checkpoints import load_generator  # noqa: E402
from dwsfusion.color import read_luma_u8  # noqa: E402
from dwsfusion.constants import MS_SSIM_MIN_SIDE  # noqa: E402
from dwsfusion.loss_weights import LossWeights  # noqa: E402
from dwsfusion.losses import supervised_losses  # noqa: E402
from dwsfusion.model import Discriminator, Generator, GeneratorConfig  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402
from dwsfusion.quicktrain import random_patches  # noqa: E402
from dwsfusion.step import build_networks  # noqa: E402
from pipelines.train import load_train_state  # noqa: E402

TERMS = ("intensity", "gradient", "ms_ssim", "dual_ir", "dual_vi", "dual_cross")


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).float().div(255)[None, None]


@torch.no_grad()
def fit_on_images(generator: Generator, folder: Path) -> dict[str, float]:
    """Mean of each supervised term over the whole images of ``folder`` (ir/ + vi/)."""
    pairs, _ = find_pairs(folder / "ir", folder / "vi")
    rows = []
    for pair in pairs:
        ir, vi = _tensor(read_luma_u8(pair.ir)), _tensor(read_luma_u8(pair.vi))
        if min(ir.shape[-2:]) < MS_SSIM_MIN_SIDE:  # MS-SSIM's five scales need more
            continue
        out = generator(ir, vi)
        terms = supervised_losses(out, ir, vi, LossWeights())
        # How far the weight nets are from sigmoid(input), their value when the U-Net branch adds 0
        branch = max((out.w_ir - ir.sigmoid()).abs().max().item(), (out.w_vi - vi.sigmoid()).abs().max().item())
        rows.append([terms[k].item() for k in TERMS] + [branch])
    means = np.mean(rows, axis=0).tolist()
    return dict(zip(TERMS, means, strict=False)) | {
        "weight_map_minus_sigmoid_of_input_max": float(np.max(rows, axis=0)[-1]),
        "pairs": len(rows),
    }


def release_head_score(critic: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """The release's critic: our critic's convolutions, then a linear layer over the flattened
    features created anew (PyTorch's default initialisation) in every call."""
    x = critic.features(x).flatten(1)
    return torch.nn.Linear(x.shape[1], 1)(x)


def gradient_norms(state: dict, roadscene: Path, draws: int) -> dict[str, float]:
    nets = build_networks(GeneratorConfig(**state["generator_config"]))
    for key, module in nets.modules().items():
        module.load_state_dict(state["nets"][key])
    nets.generator.load_state_dict(state["best"]["generator"])
    pairs, _ = find_pairs(roadscene / "ir", roadscene / "vi")
    sources = [(read_luma_u8(p.ir), read_luma_u8(p.vi)) for p in pairs]
    sources = [(a, b) for a, b in sources if min(a.shape) >= 240]
    ir, vi = (x.float().div(255) for x in random_patches(sources, np.random.default_rng(1), 16, 240))

    weights = LossWeights()
    generator = nets.generator.train()
    out = generator(ir, vi)
    terms = supervised_losses(out, ir, vi, weights)
    params = [p for p in generator.parameters() if p.requires_grad]

    def norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))

    trained = -nets.d_ir(out.fused).mean() - nets.d_vi(out.fused).mean()
    torch.manual_seed(0)
    release = []
    for _ in range(draws):
        scores = release_head_score(nets.d_ir, out.fused).mean() + release_head_score(nets.d_vi, out.fused).mean()
        release.append(norm(-weights.adversarial * scores))
    return {
        "content_x10": norm(weights.content * terms["content"]),
        "dual_weight": norm(terms["dual_weight"]),
        "adversarial_x0.1_trained_head": norm(weights.adversarial * trained),
        "adversarial_x0.1_release_head_mean": float(np.mean(release)),
        "adversarial_x0.1_release_head_draws": release,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint folder or its state.pt")
    parser.add_argument("--name", required=True, help="results go to benchmarks/results/loss_balance_<name>.json")
    parser.add_argument("--draws", type=int, default=5, help="random release heads to average")
    args = parser.parse_args()
    roadscene, tno = SHARED / "data" / "RoadScene", SHARED / "data" / "TNO"
    release_file = SHARED / "official" / "dwsfusion_official_generator.pth"
    if not (roadscene / "ir").is_dir() or not (tno / "ir").is_dir() or not release_file.is_file():
        raise SystemExit(f"{SHARED}/data/RoadScene, TNO and the release weights are needed")
    folder = args.checkpoint.parent if args.checkpoint.is_file() else args.checkpoint
    if not (folder / "state.pt").is_file():
        raise SystemExit(f"{args.checkpoint}: no state.pt there (give a training checkpoint folder or its state.pt)")
    state = load_train_state(folder)
    trained = Generator(GeneratorConfig(**state["generator_config"]))
    trained.load_state_dict(state["best"]["generator"])
    release = load_generator(release_file)
    fit = {
        data: {"trained": fit_on_images(trained.eval(), root), "release": fit_on_images(release, root)}
        for data, root in (("TNO", tno), ("RoadScene", roadscene))
    }
    write_result(
        f"loss_balance_{args.name}",
        {
            "checkpoint": str(folder),
            "fit_whole_images": fit,
            "generator_gradient_norms_16_crops_240": gradient_norms(state, roadscene, args.draws),
        },
    )


if __name__ == "__main__":
    main()
