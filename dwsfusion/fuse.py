"""Fuse registered IR/VIS pairs of any size with a generator; colour via the VIS chroma."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoints import load_generator
from .color import ImageError, quantize, read_image, rgb_to_ycrcb, to_gray_float, write_image, ycrcb_to_rgb
from .model import Generator
from .pairs import ImagePair, find_pairs
from .tiling import TileConfig, fuse_luma_tiled


@dataclass
class SourcePair:
    """One pair as the model sees it: IR and VIS luma in [0, 1], plus the VIS chroma."""

    name: str
    ir: np.ndarray  # (H, W) float32
    vis_y: np.ndarray  # (H, W) float32
    chroma: tuple[np.ndarray, np.ndarray] | None  # (Cr, Cb) for colour VIS, else None
    max_value: int  # 255 or 65535: the output's bit depth follows the inputs'


def load_pair(pair: ImagePair) -> SourcePair:
    ir_raw, ir_max = read_image(pair.ir)
    vi_raw, vi_max = read_image(pair.vi)
    if ir_raw.shape[:2] != vi_raw.shape[:2]:
        raise ImageError(
            f"{pair.ir} is {ir_raw.shape[1]}x{ir_raw.shape[0]} but {pair.vi} is "
            f"{vi_raw.shape[1]}x{vi_raw.shape[0]}: the pair is not registered"
        )
    ir = to_gray_float(ir_raw, ir_max)
    if vi_raw.ndim == 3:
        y, cr, cb = rgb_to_ycrcb(vi_raw.astype(np.float32) / vi_max)
        vis_y, chroma = y.astype(np.float32), (cr, cb)
    else:
        vis_y, chroma = vi_raw.astype(np.float32) / vi_max, None
    return SourcePair(pair.stem, ir, vis_y, chroma, max(ir_max, vi_max))


@torch.inference_mode()
def fuse_luma(generator: Generator, ir: np.ndarray, vis_y: np.ndarray, tiles: TileConfig | None = None) -> np.ndarray:
    """(H, W) luma planes in [0, 1] -> fused (H, W) float32 in [0, 1]; in overlapping tiles
    when ``tiles`` says the image is too large for one pass."""
    if tiles is not None and tiles.wants_tiles(*ir.shape):
        return fuse_luma_tiled(generator, ir, vis_y, tiles)
    device = next(generator.parameters()).device
    ir_t = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None].to(device)
    vi_t = torch.from_numpy(np.ascontiguousarray(vis_y, dtype=np.float32))[None, None].to(device)
    return generator.fuse(ir_t, vi_t)[0][0, 0].float().cpu().numpy()


def compose_output(source: SourcePair, fused_y: np.ndarray, rounding: str = "truncate") -> np.ndarray:
    """Fused luma -> the image to write: RGB with the VIS chroma for colour VIS, else gray."""
    if source.chroma is None:
        return quantize(fused_y, source.max_value, rounding)
    return quantize(ycrcb_to_rgb(fused_y, *source.chroma), source.max_value, rounding)


def fuse_pair(
    generator: Generator, pair: ImagePair, rounding: str = "truncate", tiles: TileConfig | None = TileConfig()
) -> np.ndarray:
    source = load_pair(pair)
    return compose_output(source, fuse_luma(generator, source.ir, source.vis_y, tiles), rounding)


@dataclass
class FuseReport:
    written: list[Path]
    failed: list[str]  # "<file>: <reason>"


def fuse_pairs(
    generator: Generator,
    pairs: Iterable[ImagePair],
    out_dir: str | os.PathLike,
    rounding: str = "truncate",
    progress: bool = True,
) -> FuseReport:
    """Fuse every pair into ``out_dir/<stem>.png``. A bad pair is reported and skipped; each
    output is written atomically, so an interrupted run leaves only complete images."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(pairs)
    report = FuseReport([], [])
    for pair in tqdm(pairs, desc="fuse", unit="pair", disable=not progress):
        try:
            image = fuse_pair(generator, pair, rounding)
        except ImageError as exc:
            report.failed.append(str(exc))
            continue
        report.written.append(write_image(out_dir / f"{pair.stem}.png", image))
    return report


def fuse_folder(
    checkpoint: str | os.PathLike,
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str = "cpu",
    rounding: str = "truncate",
    progress: bool = True,
) -> FuseReport:
    """The ``dwsfusion fuse`` step: checkpoint + folders -> fused PNGs named by stem."""
    pairs, _ = find_pairs(ir_dir, vi_dir, strict=True)
    generator = load_generator(checkpoint).to(device)
    return fuse_pairs(generator, pairs, out_dir, rounding, progress)
