"""Fuse images too large for one pass in overlapping tiles, without seams.

Two parts of the generator see the whole image: the AlphaNet's mean (one scalar per image)
and the frequency selection / omni attention of the adaptive convolutions. The alpha is
computed exactly here, tile by tile (its two 3x3 convolutions need a 2-pixel halo), and
given to every tile, so all tiles share the whole image's cross-perception balance. The
rest differs slightly from tile to tile; overlapping tiles are blended with linear ramps
(normalised by the summed weights), so the transition is spread over ``overlap`` pixels and no
seam appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import Generator
from .precision import autocast

ALPHA_HALO = 2  # two 3x3 convolutions in AlphaNet.features


@dataclass(frozen=True)
class TileConfig:
    size: int = 1024  # tile side in pixels
    overlap: int = 64  # blended band between neighbouring tiles
    above_pixels: int = 2048 * 2048  # images with more pixels than this are tiled

    def __post_init__(self) -> None:
        if self.size < 64 or not 0 <= self.overlap < self.size // 2:
            raise ValueError(f"tile size {self.size} must be >= 64 and overlap {self.overlap} in [0, size/2)")

    def wants_tiles(self, height: int, width: int) -> bool:
        return height * width > self.above_pixels and max(height, width) > self.size


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``size`` overlapping by >= ``overlap``."""
    if length <= size:
        return [0]
    step = size - overlap
    count = -(-(length - overlap) // step)  # ceil
    # Spread the tiles evenly: the last one ends exactly at ``length``.
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def _ramp(size: int, overlap: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """1-D blend weights: a linear ramp over ``overlap`` pixels on sides with a neighbour."""
    weights = np.ones(size, np.float32)
    if overlap:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if fade_in:
            weights[:overlap] = np.minimum(weights[:overlap], ramp)
        if fade_out:
            weights[-overlap:] = np.minimum(weights[-overlap:], ramp[::-1])
    return weights


def _as_tensor(plane: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None].to(device)


@torch.inference_mode()
def image_alpha(generator: Generator, ir: np.ndarray, vis: np.ndarray, size: int) -> torch.Tensor:
    """The AlphaNet output of the whole image, computed in tiles: (1, 1, 1, 1)."""
    device = next(generator.parameters()).device
    height, width = ir.shape
    total = torch.zeros(1, 8, dtype=torch.float64, device=device)
    for top in range(0, height, size):
        for left in range(0, width, size):
            bottom, right = min(top + size, height), min(left + size, width)
            # The tile plus a halo where it has neighbours; at the image's own border the
            # convolutions pad exactly as they do on the whole image.
            t0, l0 = max(top - ALPHA_HALO, 0), max(left - ALPHA_HALO, 0)
            t1, l1 = min(bottom + ALPHA_HALO, height), min(right + ALPHA_HALO, width)
            window = (slice(t0, t1), slice(l0, l1))
            feats = generator.alpha.features(_as_tensor(ir[window], device), _as_tensor(vis[window], device))
            feats = feats[..., top - t0 : bottom - t0, left - l0 : right - l0]
            total += feats.double().sum(dim=(-2, -1))
    return generator.alpha.head((total / (height * width)).float())


@torch.inference_mode()
def fuse_luma_tiled(
    generator: Generator, ir: np.ndarray, vis: np.ndarray, tiles: TileConfig, precision: str = "fp32"
) -> np.ndarray:
    """(H, W) luma planes in [0, 1] -> fused (H, W) float32, tile by tile (``precision`` as in
    ``dwsfusion.precision.autocast``; the whole-image alpha is always summed in float64)."""
    device = next(generator.parameters()).device
    height, width = ir.shape
    alpha = image_alpha(generator, ir, vis, tiles.size)
    fused = np.zeros((height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    tops, lefts = tile_starts(height, tiles.size, tiles.overlap), tile_starts(width, tiles.size, tiles.overlap)
    for i, top in enumerate(tops):
        bottom = min(top + tiles.size, height)
        rows = _ramp(bottom - top, tiles.overlap, i > 0, i < len(tops) - 1)
        for j, left in enumerate(lefts):
            right = min(left + tiles.size, width)
            cols = _ramp(right - left, tiles.overlap, j > 0, j < len(lefts) - 1)
            window = (slice(top, bottom), slice(left, right))
            with autocast(device, precision):
                out = generator.fuse(_as_tensor(ir[window], device), _as_tensor(vis[window], device), alpha)[0]
            blend = np.outer(rows, cols)
            fused[window] += out[0, 0].float().cpu().numpy() * blend
            weight[window] += blend
    return fused / weight  # every pixel has weight > 0: the ramps never reach zero
