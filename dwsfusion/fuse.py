"""Fuse registered IR/VIS pairs of any size with a generator; colour via the VIS chroma."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_generator
from .color import ImageError, quantize, read_image, rgb_to_ycrcb, to_gray_float, ycrcb_to_rgb
from .errors import UsageError
from .model import Generator
from .onnx_engine import ENGINES, ONNX_SUFFIX, OnnxFuser
from .pairs import ImagePair
from .precision import autocast
from .tiling import TileConfig, fuse_luma_tiled

# What fuses: a PyTorch generator, or an exported one on ONNX Runtime (``dwsfusion export``).
Fuser = Generator | OnnxFuser


@dataclass
class SourcePair:
    """One pair as the model sees it: IR and VIS luma in [0, 1], plus the VIS chroma."""

    name: str
    ir: np.ndarray  # (H, W) float32
    vis_y: np.ndarray  # (H, W) float32
    chroma: tuple[np.ndarray, np.ndarray] | None  # (Cr, Cb) for colour VIS, else None
    max_value: int  # 255 or 65535: the output's bit depth follows the inputs'


def load_pair(pair: ImagePair) -> SourcePair:
    return source_pair(pair.stem, read_image(pair.ir), read_image(pair.vi), str(pair.ir), str(pair.vi))


def source_pair(
    name: str, ir: tuple[np.ndarray, int], vi: tuple[np.ndarray, int], ir_label: str, vi_label: str
) -> SourcePair:
    """Two read images (``read_image``'s (array, max value)) -> the pair as the model sees it;
    the labels (files or archive members) are what an error names."""
    (ir_raw, ir_max), (vi_raw, vi_max) = ir, vi
    if ir_raw.shape[:2] != vi_raw.shape[:2]:
        raise ImageError(
            f"{ir_label} is {ir_raw.shape[1]}x{ir_raw.shape[0]} but {vi_label} is "
            f"{vi_raw.shape[1]}x{vi_raw.shape[0]}: the pair is not registered"
        )
    ir_y = to_gray_float(ir_raw, ir_max)
    if vi_raw.ndim == 3:
        y, cr, cb = rgb_to_ycrcb(vi_raw.astype(np.float32) / vi_max)
        vis_y, chroma = y.astype(np.float32), (cr, cb)
    else:
        vis_y, chroma = vi_raw.astype(np.float32) / vi_max, None
    return SourcePair(name, ir_y, vis_y, chroma, max(ir_max, vi_max))


def resolve_engine(path: str | os.PathLike | None, engine: str = "auto", precision: str = "fp32") -> str:
    """'torch' or 'onnxruntime' for a model file (``None``: a registered model, where auto means
    torch): auto runs an ``.onnx`` file on ONNX Runtime and anything else on PyTorch. A pairing
    that cannot run (an engine and a file of the other kind, or ONNX Runtime below fp32) is
    refused here, before any model is loaded."""
    if engine not in ("auto", *ENGINES):
        raise UsageError(f"engine {engine!r}: choose auto, {', '.join(ENGINES)}")
    is_onnx = path is not None and Path(path).suffix.lower() == ONNX_SUFFIX
    if engine == "onnxruntime" and path is not None and not is_onnx:
        raise UsageError(
            f"{path}: the onnxruntime engine runs an exported model; write one with "
            f"dwsfusion export --checkpoint {path} --output model.onnx"
        )
    if engine == "torch" and is_onnx:
        raise UsageError(f"{path}: an ONNX file runs on the onnxruntime engine (--engine onnxruntime or auto)")
    resolved = "onnxruntime" if is_onnx or engine == "onnxruntime" else "torch"
    if resolved == "onnxruntime" and precision != "fp32":
        raise UsageError(f"precision {precision}: the onnxruntime engine runs the export's fp32")
    return resolved


def load_fuser(path: str | os.PathLike, engine: str = "auto", device: str = "cpu", threads: int | None = None) -> Fuser:
    """A model file -> what fuses with it (``resolve_engine``): an exported model on ONNX
    Runtime, or a PyTorch checkpoint (``load_generator``) on ``device``."""
    if resolve_engine(path, engine) == "onnxruntime":  # ONNX Runtime picks its provider: no device
        return OnnxFuser(path, threads)
    return load_generator(path).to(device)


def fuser_device(fuser: Fuser) -> str:
    """Where a fuser's outputs are scored: its generator's device, or the CPU for ONNX Runtime."""
    return fuser.device if isinstance(fuser, OnnxFuser) else str(next(fuser.parameters()).device)


@torch.inference_mode()
def fuse_luma(
    generator: Fuser,
    ir: np.ndarray,
    vis_y: np.ndarray,
    tiles: TileConfig | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """(H, W) luma planes in [0, 1] -> fused (H, W) float32 in [0, 1]; in overlapping tiles
    when ``tiles`` says the image is too large for one pass (PyTorch only: an exported graph
    fuses the whole image, as its AlphaNet cannot be given a whole image's alpha)."""
    if tiles is not None and tiles.wants_tiles(*ir.shape) and isinstance(generator, Generator):
        return fuse_luma_tiled(generator, ir, vis_y, tiles, precision)
    return fuse_luma_batch(generator, ir[None], vis_y[None], precision)[0]


@torch.inference_mode()
def fuse_luma_batch(generator: Fuser, irs: np.ndarray, vis: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """(N, H, W) stacks of same-size luma planes in [0, 1] -> fused (N, H, W) float32, in one
    forward pass (eval-mode BatchNorm and per-sample attention: each pair as if alone)."""
    if isinstance(generator, OnnxFuser):
        resolve_engine(generator.path, "onnxruntime", precision)  # fp32 only
        return generator(irs, vis)
    device = next(generator.parameters()).device
    ir_t = torch.from_numpy(np.ascontiguousarray(irs, dtype=np.float32))[:, None].to(device)
    vi_t = torch.from_numpy(np.ascontiguousarray(vis, dtype=np.float32))[:, None].to(device)
    with autocast(device, precision):
        fused = generator.fuse(ir_t, vi_t)[0]
    return fused[:, 0].float().cpu().numpy()


def compose_output(source: SourcePair, fused_y: np.ndarray, rounding: str = "truncate") -> np.ndarray:
    """Fused luma -> the image to write: RGB with the VIS chroma for colour VIS, else gray."""
    if source.chroma is None:
        return quantize(fused_y, source.max_value, rounding)
    return quantize(ycrcb_to_rgb(fused_y, *source.chroma), source.max_value, rounding)


def fuse_pair(
    generator: Fuser,
    pair: ImagePair,
    rounding: str = "truncate",
    tiles: TileConfig | None = TileConfig(),
    precision: str = "fp32",
) -> np.ndarray:
    source = load_pair(pair)
    return compose_output(source, fuse_luma(generator, source.ir, source.vis_y, tiles, precision), rounding)


def fuse_sources(
    generator: Fuser, sources: list[SourcePair], tiles: TileConfig | None = TileConfig(), precision: str = "fp32"
) -> list[np.ndarray]:
    """The fused (H, W) luma of each source pair, in order: those of one size (and not tiled)
    share one forward pass, a large one is fused in tiles on its own."""
    fused: list[np.ndarray | None] = [None] * len(sources)
    same_size: dict[tuple[int, int], list[int]] = {}
    for i, source in enumerate(sources):
        if tiles is not None and tiles.wants_tiles(*source.ir.shape) and isinstance(generator, Generator):
            fused[i] = fuse_luma(generator, source.ir, source.vis_y, tiles, precision)
        else:
            same_size.setdefault(source.ir.shape, []).append(i)
    for members in same_size.values():
        irs = np.stack([sources[i].ir for i in members])
        vis = np.stack([sources[i].vis_y for i in members])
        for i, luma in zip(members, fuse_luma_batch(generator, irs, vis, precision), strict=True):
            fused[i] = luma
    return fused
