"""Pure patch geometry and pair validation (NumPy only; no Ray), used by the Ray job."""

from __future__ import annotations

import numpy as np


def grid_positions(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of a regular grid of patches fully inside the image, row-major.
    Rows: 0, stride, 2*stride, ... while y + patch <= height (columns likewise)."""
    if height < patch or width < patch:
        return []
    return [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - patch + 1, stride)]


def patch_count(height: int, width: int, patch: int, stride: int) -> int:
    if height < patch or width < patch:
        return 0
    return ((height - patch) // stride + 1) * ((width - patch) // stride + 1)


def patch_views(image: np.ndarray, positions: list[tuple[int, int]], patch: int) -> list[np.ndarray]:
    """(H, W) image -> views (patch, patch) at ``positions`` (no copy; ``np.stack`` copies once)."""
    return [image[y : y + patch, x : x + patch] for y, x in positions]


def pair_problem(ir: np.ndarray, vi: np.ndarray, patch: int) -> str | None:
    """Why a decoded pair (8-bit luma planes) cannot give training patches, or None."""
    if ir.shape != vi.shape:
        return f"size mismatch: IR {ir.shape[1]}x{ir.shape[0]}, VIS {vi.shape[1]}x{vi.shape[0]}"
    if min(ir.shape) < patch:
        return f"{ir.shape[1]}x{ir.shape[0]} is smaller than the {patch}px patch"
    for name, plane in (("IR", ir), ("VIS", vi)):
        if plane.min() == plane.max():
            return f"{name} image is constant (all {int(plane.min())})"
    return None
