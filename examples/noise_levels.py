"""Pixel-level detail of the training and evaluation sets: Immerkaer's fast noise estimate
(J. Immerkaer, "Fast noise variance estimation", CVIU 64(2), 1996) per image, averaged over the
IR and the VIS of ../shared RoadScene (at full size and at the recipe's 0.6) and TNO.

It is why ``vis_noise`` exists (docs/fidelity.md): RoadScene's VIS holds far less pixel-level
detail than TNO's. Writes benchmarks/results/noise_levels.json. Seconds on a CPU.

Run: python examples/noise_levels.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import SHARED, write_result  # noqa: E402

from data_prep.patches import rescale  # noqa: E402
from dwsfusion.color import read_luma_u8  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402

# the difference of two Laplacians: blind to planes and ramps, so what it sees is pixel-level
LAPLACIAN_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def noise_sigma(image: np.ndarray) -> float:
    """(H, W) uint8 -> Immerkaer's estimate of the noise's standard deviation, in grey levels."""
    response = cv2.filter2D(image.astype(np.float64), -1, LAPLACIAN_DIFFERENCE)[1:-1, 1:-1]
    return math.sqrt(math.pi / 2) * float(np.abs(response).mean()) / 6


def main() -> None:
    sets = {"RoadScene": (1.0, 0.6), "TNO": (1.0,)}
    if not all((SHARED / "data" / name / "ir").is_dir() for name in sets):
        raise SystemExit(f"{SHARED}/data/RoadScene and TNO are needed")
    levels = {}
    for name, scales in sets.items():
        pairs, _ = find_pairs(SHARED / "data" / name / "ir", SHARED / "data" / name / "vi")
        images = [(read_luma_u8(pair.ir), read_luma_u8(pair.vi)) for pair in pairs]
        for scale in scales:
            sigmas = np.array([[noise_sigma(rescale(x, scale)) for x in pair] for pair in images])
            ir, vi = (float(x) for x in sigmas.mean(axis=0))
            levels[f"{name} x{scale}"] = {"pairs": len(images), "ir": ir, "vi": vi}
            print(f"{name:9s} x{scale}: IR {ir:.2f}  VIS {vi:.2f} grey levels")
    estimator = "Immerkaer 1996, mean over each set's images, grey levels"
    write_result("noise_levels", {"estimator": estimator, "sets": levels}, echo=False)


if __name__ == "__main__":
    main()
