"""Probe the release recipe in one process, where a question about it is cheaper to answer than
through the pipeline: ``train_step`` on random 240x240 crops of ../shared RoadScene (lr 0.01,
batch 16), scored on the 25 TNO pairs every ``--every`` steps twice: with the BatchNorm running
statistics training left, and with them re-estimated on the fusion path
(``dwsfusion.step.recalibrate_batchnorm``, 20 training batches). Switches: ``--adversarial``
(the weight of the critics' term; 0 trains without them), ``--lr``, ``--decay-at STEP`` (lr x 0.1
there), ``--init`` (continue from a probe checkpoint, its optimiser states included), ``--patch``
(crop side), ``--scale`` (the pairs resized first, as ``dwsfusion prep --scale`` does),
``--seed`` (the networks' start and the crops' draws; ``--data-seed`` sets the draws apart from
the start, ``--part-seed fusion=1`` one part of the generator's), ``--vis-noise`` (grey levels of Gaussian
noise on the training VIS, as ``vis_noise`` in training),
the critics' ``--critic-steps`` (updates per generator step, ``train_step``'s ``critic_steps``),
``--lr-d`` (their rate) and ``--adversarial-from STEP`` (they train from the start, the generator
sees their term after STEP), and ``--fusion-init`` (where the fusion head starts, as
``fusion_init`` in training; this probe keeps ``release`` by default, the start every probe
recorded before ``sum`` existed ran from).

Writes benchmarks/results/recipe_probe_<name>.json (the TNO means per evaluation) and a
checkpoint per evaluation under --work. The findings in docs/fidelity.md come from these runs.

Run: python examples/recipe_probe.py --name constant_lr [--steps 600 --every 100 --adversarial 0.1]
     python examples/recipe_probe.py --name scale_0.6 --steps 400 --every 200 --adversarial 0 --patch 176 --scale 0.6
     python examples/recipe_probe.py --name fusion_sum_800 --steps 800 --every 200 --adversarial 0 --patch 176 \
         --scale 0.6 --vis-noise 3 --fusion-init sum
     python examples/recipe_probe.py --name gan_0.01 --steps 600 --every 200 --adversarial 0.01 --patch 176 \
         --scale 0.6 --vis-noise 3 --fusion-init sum --critic-steps 2 --lr-d 0.001 --adversarial-from 200
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import SHARED, write_result  # noqa: E402

from data_prep.patches import rescale  # noqa: E402
from dwsfusion.augment import add_visible_noise  # noqa: E402
from dwsfusion.color import read_luma_u8  # noqa: E402
from dwsfusion.evaluate import evaluate_generator  # noqa: E402
from dwsfusion.loss_weights import LossWeights  # noqa: E402
from dwsfusion.model import ALPHA_INITS, FUSION_INITS  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402
from dwsfusion.quicktrain import random_patches  # noqa: E402
from dwsfusion.step import build_networks, build_optimizers, recalibrate_batchnorm, train_step  # noqa: E402

HEADLINE = ("Qabf", "VIF", "SSIM")
GENERATOR_PARTS = ("alpha", "weight_ir", "weight_vi", "fusion")


def part_seed(text: str) -> tuple[str, int]:
    """``fusion=1`` -> ("fusion", 1), for --part-seed."""
    part, _, seed = text.partition("=")
    if part not in GENERATOR_PARTS or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected PART=SEED with PART one of {', '.join(GENERATOR_PARTS)}")
    return part, int(seed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True, help="results go to benchmarks/results/recipe_probe_<name>.json")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--adversarial", type=float, default=0.1)
    parser.add_argument("--lr-d", type=float, help="the critics' rate (default: --lr)")
    parser.add_argument("--critic-steps", type=int, default=1, help="critic updates per generator step")
    parser.add_argument("--adversarial-from", type=int, default=0, help="the generator sees the critics from here")
    parser.add_argument("--decay-at", type=int, nargs="*", default=[])
    parser.add_argument("--init", help="a checkpoint this script wrote (continues from its step)")
    parser.add_argument("--patch", type=int, default=240, help="crop side (> 160 for MS-SSIM)")
    parser.add_argument("--scale", type=float, default=1.0, help="resize the training pairs by this factor first")
    parser.add_argument("--vis-noise", type=float, default=0.0, help="grey levels of noise on the training VIS")
    parser.add_argument("--fusion-init", choices=FUSION_INITS, default="release", help="where the fusion head starts")
    parser.add_argument("--alpha-init", choices=ALPHA_INITS, default="release", help="where the AlphaNet starts")
    parser.add_argument("--seed", type=int, default=0, help="the networks' start and the crops' draws")
    parser.add_argument("--data-seed", type=int, help="the crops' and noise draws alone (default: --seed)")
    parser.add_argument(
        "--part-seed",
        type=part_seed,
        action="append",
        default=[],
        metavar="PART=SEED",
        help=f"start one part of the generator ({', '.join(GENERATOR_PARTS)}) as SEED starts it",
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "recipe_probe")
    return parser


def _start(args: argparse.Namespace):
    """(networks, optimisers, step) the probe starts from: fresh, seeded, or ``--init``."""
    torch.manual_seed(args.seed)
    nets = build_networks(fusion_init=args.fusion_init, alpha_init=args.alpha_init)
    for part, seed in args.part_seed:
        with torch.random.fork_rng():  # the other start's draws leave the run's own untouched
            torch.manual_seed(seed)
            other = build_networks(fusion_init=args.fusion_init).generator
        getattr(nets.generator, part).load_state_dict(getattr(other, part).state_dict())
    opts = build_optimizers(nets, args.lr, args.lr_d or args.lr)
    if not args.init:
        return nets, opts, 0
    state = torch.load(args.init, weights_only=True)
    for key, module in nets.modules().items():
        module.load_state_dict(state["nets"][key])
    for key, optimizer in (("generator", opts.generator), ("d_ir", opts.d_ir), ("d_vi", opts.d_vi)):
        optimizer.load_state_dict(state["optimizers"][key])
        for group in optimizer.param_groups:
            group["lr"] = args.lr if key == "generator" else args.lr_d or args.lr
    return nets, opts, state["step"]


def _save(nets, opts, step: int, path: Path) -> None:
    optimizers = {"generator": opts.generator, "d_ir": opts.d_ir, "d_vi": opts.d_vi}
    nets_state = {k: m.state_dict() for k, m in nets.modules().items()}
    torch.save(
        {"step": step, "nets": nets_state, "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}, path
    )


def main() -> None:
    args = _parser().parse_args()
    roadscene, tno = SHARED / "data" / "RoadScene", SHARED / "data" / "TNO"
    if not (roadscene / "ir").is_dir() or not (tno / "ir").is_dir():
        raise SystemExit(f"{SHARED}/data/RoadScene and TNO are needed")
    patch, batch = args.patch, 16
    sources = [
        (rescale(read_luma_u8(ir), args.scale), rescale(read_luma_u8(roadscene / "vi" / ir.name), args.scale))
        for ir in sorted((roadscene / "ir").iterdir())
    ]
    sources = [(a, b) for a, b in sources if min(a.shape) >= patch]
    tno_pairs, _ = find_pairs(tno / "ir", tno / "vi")
    nets, opts, start = _start(args)
    # Seed 0 keeps the draws of every probe recorded before --seed existed.
    data_seed = args.seed if args.data_seed is None else args.data_seed
    rng = np.random.default_rng([data_seed, start] if data_seed else start)
    noise_draws = torch.Generator().manual_seed(start + 1_000_003 * data_seed)

    def crops() -> tuple[torch.Tensor, torch.Tensor]:
        ir, vi = (x.float().div(255) for x in random_patches(sources, rng, batch, patch))
        return ir, add_visible_noise(vi, args.vis_noise, noise_draws) if args.vis_noise else vi

    def tno_means(generator) -> dict[str, float]:
        evaluation = evaluate_generator(generator.eval(), tno_pairs, HEADLINE, progress=False)
        return {k: v[0] for k, v in evaluation.summary().items()}

    weights = LossWeights(adversarial=args.adversarial)
    warm_up = LossWeights(adversarial=0.0)  # the critics train, the generator does not see them
    critic_steps = args.critic_steps if args.adversarial else 0
    evaluations, started = [], time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    for step in range(start + 1, args.steps + 1):
        if step in args.decay_at:
            for optimizer in (opts.generator, opts.d_ir, opts.d_vi):
                for group in optimizer.param_groups:
                    group["lr"] *= 0.1
        seen = weights if step > args.adversarial_from else warm_up
        train_step(nets, opts, *crops(), seen, critic_steps=critic_steps)
        if step % args.every and step != args.steps:
            continue
        recalibrated = copy.deepcopy(nets.generator)
        recalibrate_batchnorm(recalibrated, [crops() for _ in range(20)])
        row = {
            "step": step,
            "seconds": time.perf_counter() - started,
            "training_statistics": tno_means(copy.deepcopy(nets.generator)),
            "recalibrated_statistics": tno_means(recalibrated),
        }
        print(row, flush=True)
        evaluations.append(row)
        _save(nets, opts, step, args.work / f"{args.name}_{step}.pt")
    recipe = (
        f"train_step, RoadScene x{args.scale} random {patch}x{patch} crops, batch {batch}, "
        f"lr {args.lr}, adversarial {args.adversarial} from step {args.adversarial_from} "
        f"({critic_steps} critic steps at lr {args.lr_d or args.lr}), VIS noise {args.vis_noise}, "
        f"decay at {args.decay_at}, from {args.init or 'scratch'} (fusion_init {args.fusion_init}), "
        f"seed {args.seed}"
        + (f", AlphaNet {args.alpha_init}" if args.alpha_init != "release" else "")
        + (f", data seed {data_seed}" if data_seed != args.seed else "")
        + "".join(f", {part} from seed {seed}" for part, seed in args.part_seed)
    )
    write_result(
        f"recipe_probe_{args.name}",
        {"recipe": recipe, "evaluated_on": "TNO 25 pairs, our metric suite", "evaluations": evaluations},
    )


if __name__ == "__main__":
    main()
