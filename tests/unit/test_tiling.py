"""Tiled fusion of large images: the exact whole-image alpha, and no seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dwsfusion.checkpoints import load_generator
from dwsfusion.color import luma_u8
from dwsfusion.fuse import fuse_luma
from dwsfusion.samples import make_scene
from dwsfusion.tiling import TileConfig, fuse_luma_tiled, image_alpha, tile_starts


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    ir, vi_rgb = make_scene(np.random.default_rng(3), 300, 420)
    return ir.astype(np.float32) / 255, luma_u8(vi_rgb).astype(np.float32) / 255


@pytest.mark.parametrize("length,size,overlap", [(100, 128, 16), (300, 128, 32), (420, 128, 32), (1000, 256, 64)])
def test_tile_starts_cover_with_overlap(length, size, overlap):
    starts = tile_starts(length, size, overlap)
    assert starts[0] == 0 and min(starts[-1] + size, length) == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_alpha_in_tiles_equals_whole_image(random_checkpoint, scene):
    generator = load_generator(random_checkpoint)
    ir, vi = scene
    whole = generator.alpha(torch.from_numpy(ir)[None, None], torch.from_numpy(vi)[None, None])
    assert image_alpha(generator, ir, vi, size=96).item() == pytest.approx(whole.item(), rel=1e-5, abs=1e-6)


def _edge_steps(tiled: np.ndarray, whole: np.ndarray, tiles: TileConfig) -> tuple[float, float]:
    """Largest column-to-column step of (tiled - whole), in grey levels, at the tile edges and
    elsewhere. A seam is a step at the edges that appears nowhere else."""
    diff = (tiled - whole) * 255
    width = diff.shape[1]
    starts = tile_starts(width, tiles.size, tiles.overlap)
    edges = (set(starts[1:]) | {s + tiles.size for s in starts[:-1]}) - {width}
    steps = np.abs(np.diff(diff, axis=1)).mean(axis=0)  # steps[c - 1]: between columns c - 1 and c
    at_edges = max(steps[c - 1] for c in edges)
    elsewhere = max(steps[c - 1] for c in range(1, width) if c not in edges)
    return float(at_edges), float(elsewhere)


def test_tiles_blend_without_seams(random_checkpoint, scene):
    generator = load_generator(random_checkpoint)
    ir, vi = scene
    whole = fuse_luma(generator, ir, vi)
    tiles = TileConfig(size=128, overlap=32, above_pixels=0)
    tiled = fuse_luma(generator, ir, vi, tiles)  # 3 x 4 tiles
    assert tiled.shape == whole.shape and tiled.dtype == np.float32
    at_edges, elsewhere = _edge_steps(tiled, whole, tiles)
    assert at_edges <= elsewhere

    # The measure can fail: tiles averaged without ramps step at their edges.
    butt = TileConfig(size=128, overlap=0, above_pixels=0)
    at_edges, elsewhere = _edge_steps(fuse_luma_tiled(generator, ir, vi, butt), whole, butt)
    assert at_edges > 1.5 * elsewhere


def test_small_images_are_not_tiled(random_checkpoint, scene):
    generator = load_generator(random_checkpoint)
    ir, vi = scene
    np.testing.assert_array_equal(fuse_luma(generator, ir, vi, TileConfig()), fuse_luma(generator, ir, vi))
    assert not TileConfig().wants_tiles(*ir.shape)
    with pytest.raises(ValueError, match="overlap"):
        TileConfig(size=128, overlap=64)
