"""Where a trained generator loses to the release on TNO, and cheap remedies that do not help:
the measurements behind docs/fidelity.md's "where the VIF gap is".

For the training checkpoints given (``dwsfusion train``'s checkpoint folders of one run, the last
one's best generator is the one scored):

1. Per TNO image: VIF and Qabf of its fused image, of the authors' fused image and of max
   fusion, and the mean absolute difference from max(ir, vi) (the content target) in grey
   levels. Sorted by the VIF gap to the release.
2. Its BatchNorm statistics re-estimated on 8 batches of 16 random 240x240 RoadScene crops, as
   training does after each epoch, and on the same crops darkened (gamma 1.5, nearer TNO's
   night scenes): does the statistics' source move TNO?
3. The parameter average of the generators of all the checkpoints given (e.g. the last two
   epochs a run keeps), statistics re-estimated as in 2: does weight averaging move TNO?
4. The fusion head's first frequency selection: the mean gain of each band on 8 TNO crops, for
   this generator and the release's; then this generator's highest-band gate raised towards
   the release's gain (bias + 0.25, + 0.5), scored on TNO: is that gain what softens texture?
   Beside it, the mean spatial frequency (our SF metric) of the IR images of RoadScene and TNO.

Writes benchmarks/results/tno_gap.json. About a minute on 2 CPUs.

Run: python examples/tno_gap.py --checkpoints runs/reproduce/train/reproduce/checkpoint_*
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
from dwsfusion.evaluate import evaluate_generator, score_fused  # noqa: E402
from dwsfusion.fuse import fuse_pair  # noqa: E402
from dwsfusion.metrics import compute_metrics  # noqa: E402
from dwsfusion.model import Generator, GeneratorConfig  # noqa: E402
from dwsfusion.pairs import find_pairs, images_by_stem  # noqa: E402
from dwsfusion.quicktrain import random_patches  # noqa: E402
from dwsfusion.step import recalibrate_batchnorm  # noqa: E402
from pipelines.train import load_train_state  # noqa: E402

HEADLINE = ("Qabf", "VIF", "SSIM")


def _generator(state: dict, weights: dict) -> Generator:
    generator = Generator(GeneratorConfig(**state["generator_config"]))
    generator.load_state_dict(weights)
    return generator


def _tno_means(generator: Generator, pairs) -> dict[str, float]:
    evaluation = evaluate_generator(generator.eval(), pairs, HEADLINE, progress=False)
    return {k: round(v[0], 4) for k, v in evaluation.summary().items()}


def _band_gains(generator: Generator, ir: torch.Tensor, vi: torch.Tensor) -> list[float]:
    """Mean gain 2*sigmoid(gate) of each band (highest first) of the fusion head's first
    frequency selection, in eval mode."""
    selection = generator.fusion.conv_in.freq_select
    seen = []
    hook = selection.register_forward_hook(lambda module, inputs, out: seen.append(module.band_gains(inputs[0])))
    with torch.no_grad():
        generator.eval().fuse(ir, vi)
    hook.remove()
    return [round(float(g), 3) for g in seen[0].mean(dim=(0, 2, 3))]


def _per_image(trained, pairs, release_images) -> list[dict]:
    """VIF and Qabf of the trained, released and max fusion per TNO pair, worst gap first."""
    rows = []
    for pair in pairs:
        ir, vi = read_luma_u8(pair.ir).astype(np.float64), read_luma_u8(pair.vi).astype(np.float64)
        target = np.maximum(ir, vi)
        fused = {
            "trained": fuse_pair(trained, pair),
            "release": read_luma_u8(release_images[pair.stem]),
            "max": target.astype(np.uint8),
        }
        row = {"name": pair.stem}
        for name, image in fused.items():
            scores = score_fused(pair, image, ("VIF", "Qabf"))
            row |= {f"{name}_VIF": scores["VIF"], f"{name}_Qabf": scores["Qabf"]}
            if name != "max":
                row[f"{name}_grey_levels_from_max"] = float(np.abs(image - target).mean())
        row["VIF_gap"] = row["trained_VIF"] - row["release_VIF"]
        rows.append(row)
    rows.sort(key=lambda r: r["VIF_gap"])
    for r in rows:
        print(
            f"{r['name']:>8}  VIF {r['trained_VIF']:.3f} vs release {r['release_VIF']:.3f} (max {r['max_VIF']:.3f})"
            f"  grey levels from max: {r['trained_grey_levels_from_max']:.1f}"
            f" vs {r['release_grey_levels_from_max']:.1f}"
        )

    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint folders of one run, oldest first")
    args = parser.parse_args()
    roadscene, tno = SHARED / "data" / "RoadScene", SHARED / "data" / "TNO"
    released = SHARED / "official" / "tno_fused"
    if not (roadscene / "ir").is_dir() or not (tno / "ir").is_dir() or not released.is_dir():
        raise SystemExit(f"{SHARED}/data/RoadScene, TNO and official/tno_fused are needed")
    folders = sorted(c for c in args.checkpoints if Path(c).is_dir())  # checkpoint_* also matches Ray's snapshot file
    if not folders:
        raise SystemExit(f"no checkpoint folder among {args.checkpoints}")
    states = [load_train_state(c) for c in folders]
    last = states[-1]
    trained = _generator(last, last["best"]["generator"]).eval()
    pairs, _ = find_pairs(tno / "ir", tno / "vi")
    release_images = images_by_stem(released)

    rows = _per_image(trained, pairs, release_images)

    sources = [(read_luma_u8(p), read_luma_u8(roadscene / "vi" / p.name)) for p in sorted((roadscene / "ir").iterdir())]
    sources = [(a, b) for a, b in sources if min(a.shape) >= 240]
    rng = np.random.default_rng(0)
    crops = [tuple(x.float().div(255) for x in random_patches(sources, rng, 16, 240)) for _ in range(8)]
    statistics = {}
    for gamma in (1.0, 1.5):
        generator = _generator(last, last["best"]["generator"])
        recalibrate_batchnorm(generator, [(ir**gamma, vi**gamma) for ir, vi in crops])
        statistics[f"roadscene_crops_gamma_{gamma}"] = _tno_means(generator, pairs)
    averaged = {}
    for key, value in last["best"]["generator"].items():
        stack = [s["nets"]["generator"][key] for s in states]
        averaged[key] = torch.stack(stack).double().mean(0).to(value.dtype) if value.is_floating_point() else value
    averaged_generator = _generator(last, averaged)
    recalibrate_batchnorm(averaged_generator, crops)
    crops_tno = [(read_luma_u8(p.ir)[:224, :224], read_luma_u8(p.vi)[:224, :224]) for p in pairs[:8]]
    ir, vi = (torch.from_numpy(np.stack(planes)).float().div(255)[:, None] for planes in zip(*crops_tno, strict=True))
    release = load_generator(SHARED / "official" / "dwsfusion_official_generator.pth")
    gains = {"release": _band_gains(release, ir, vi), "trained": _band_gains(trained, ir, vi)}
    raised = {}
    for delta in (0.25, 0.5):
        generator = _generator(last, last["best"]["generator"])
        with torch.no_grad():
            generator.fusion.conv_in.freq_select.gates[0].bias += delta
        raised[f"bias_plus_{delta}"] = {"gains": _band_gains(generator, ir, vi), "tno": _tno_means(generator, pairs)}
    ir_spatial_frequency = {
        name: float(np.mean([compute_metrics(ir, ir, ir, ("SF",))["SF"] for ir in map(read_luma_u8, images)]))
        for name, images in (
            ("RoadScene", sorted((roadscene / "ir").iterdir())),
            ("TNO", [pair.ir for pair in pairs]),
        )
    }
    result = {
        "checkpoints": folders,
        "epochs": [s["epoch"] for s in states],
        "best_epoch": last["best"]["epoch"],
        "tno_means_trained": _tno_means(trained, pairs),
        "per_image": rows,
        "tno_means_batchnorm_statistics_from": statistics,
        "tno_means_parameter_average": _tno_means(averaged_generator, pairs),
        "fusion_head_band_gains_highest_first": gains,
        "highest_band_gate_raised": raised,
        "mean_ir_spatial_frequency": ir_spatial_frequency,
    }
    for key, value in result.items():
        if key.startswith(("tno_means", "fusion_head", "highest_band", "mean_ir")):
            print(key, value)
    write_result("tno_gap", result, echo=False)


if __name__ == "__main__":
    main()
