"""Pure patch geometry and pair validation (NumPy only; no Ray), used by the Ray job."""

from __future__ import annotations

import cv2
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


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) uint8 -> (round(H * scale), round(W * scale)); area averaging when shrinking (no
    aliasing), bicubic when enlarging. ``scale`` 1 returns the image itself."""
    if scale == 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))  # OpenCV: (W, H)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def pair_scale(height: int, width: int, scale: float, patch: int, fit_patch: bool = False) -> float:
    """The factor a ``height`` x ``width`` pair is resized by: ``scale``; with ``fit_patch``, a
    pair that ``scale`` would shrink below the patch is shrunk only so far that its short side
    is the patch's (never enlarged: a pair smaller than the patch stays so, and is rejected)."""
    short = min(height, width)
    if not fit_patch or scale >= 1.0 or round(short * scale) >= patch:
        return scale
    return min(1.0, patch / short)


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
