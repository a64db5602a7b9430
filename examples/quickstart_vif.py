"""Where the first run's VIF is lost on the sample scenes: docs/fidelity.md's "the first run".

Trains as the Ray-free quickstart does (``dwsfusion quickstart``: ``quick_train`` on random 176²
crops of the six seeded sample scenes, batch 8, lr 0.01, the release's losses), for ``--steps``
steps, fuses the scenes, and splits the VIF of its images and of mean and max fusion by source
(VIF is the sum of VIF(IR, F) and VIF(VIS, F)) and by scale (finest first): each entry is the
share of that source's information at that scale that the fused image keeps, over all six
scenes (the sum of the per-pixel log terms of our metric over their sum for the source itself).

Writes benchmarks/results/quickstart_vif.json (quickstart_vif_release_start.json with
``--fusion-init release``). About 3 minutes on 2 CPUs.

Run: python examples/quickstart_vif.py [--steps 200] [--fusion-init release --adversarial 0.1]
(the second pair of options: the first run as it was before the fusion head started as a sum)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import write_result  # noqa: E402

from dwsfusion.evaluate import gray_u8  # noqa: E402
from dwsfusion.metrics import vif_scales  # noqa: E402
from dwsfusion.model import FUSION_INITS  # noqa: E402
from dwsfusion.pairs import find_pairs, images_by_stem, resolve_source  # noqa: E402
from dwsfusion.quickstart import run_quickstart  # noqa: E402
from dwsfusion.quicktrain import QuickTrainConfig  # noqa: E402


def vif_breakdown(sources: list[tuple[str, np.ndarray, np.ndarray]], fused_dir: Path) -> dict:
    """VIF of the images in ``fused_dir`` against ``sources`` (stem, IR, VIS as 8-bit luma in
    float64): the per-image mean, and by source and scale over all pairs."""
    fused = images_by_stem(fused_dir)
    totals = {source: np.zeros((2, 4)) for source in ("ir", "vi")}
    per_image = []
    for stem, ir, vi in sources:
        f = gray_u8(fused[stem]).astype(np.float64)
        image = 0.0
        for source, ref in (("ir", ir), ("vi", vi)):
            nums, dens = vif_scales(ref, f)
            totals[source] += (nums, dens)
            image += sum(nums) / sum(dens)
        per_image.append(image)
    by_scale = {
        f"{source}_by_scale": [round(float(n / d), 4) for n, d in zip(*t, strict=True)] for source, t in totals.items()
    }
    return {"VIF": float(np.mean(per_image)), **by_scale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    defaults = QuickTrainConfig()
    parser.add_argument("--fusion-init", choices=FUSION_INITS, default=defaults.fusion_init)
    parser.add_argument("--adversarial", type=float, default=defaults.adversarial, help="the critics' weight")
    args = parser.parse_args()
    train = QuickTrainConfig(steps=args.steps, fusion_init=args.fusion_init, adversarial=args.adversarial)
    with tempfile.TemporaryDirectory() as work:
        run = run_quickstart(Path(work), train=train, progress=False)
        pairs, _ = find_pairs(*resolve_source(Path(work) / "samples"), strict=True)
        luma = lambda path: gray_u8(path).astype(np.float64)  # noqa: E731
        sources = [(pair.stem, luma(pair.ir), luma(pair.vi)) for pair in pairs]  # decoded once for all three
        baselines = Path(work) / "baselines"
        folders = {"trained": run["fused_dir"], "mean": baselines / "mean", "max": baselines / "max"}
        rows = {name: vif_breakdown(sources, folder) for name, folder in folders.items()}
    for name, row in rows.items():
        print(f"{name:8s} VIF {row['VIF']:.3f}  IR by scale {row['ir_by_scale']}  VIS by scale {row['vi_by_scale']}")
    write_result(
        "quickstart_vif" + ("_release_start" if train.fusion_init == "release" else ""),
        {
            "source": "the six seeded sample scenes",
            "train": f"quick_train, {train.steps} steps of {train.batch_size} x {train.patch}², lr {train.lr}, "
            f"fusion_init {train.fusion_init}, adversarial {train.adversarial}",
        }
        | rows,
        echo=False,
    )


if __name__ == "__main__":
    main()
