"""Evaluate fused images against their sources: one CSV row per image, mean and std."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .color import ImageError, luma_u8, read_image
from .files import atomic_write
from .fuse import fuse_pair
from .metrics import METRIC_NAMES, compute_metrics
from .model import Generator
from .pairs import ImagePair, PairError, find_pairs, images_by_stem
from .tiling import TileConfig


def gray_u8(path: Path) -> np.ndarray:
    """Any 8/16-bit gray or colour file -> 8-bit luma (PIL's convert('L') for 8-bit RGB)."""
    return to_gray_u8(*read_image(path))


def to_gray_u8(image: np.ndarray, max_value: int) -> np.ndarray:
    """A read or fused image (gray or RGB, 8/16-bit) -> the 8-bit luma the metrics expect."""
    if max_value != 255:
        image = np.rint(image.astype(np.float64) / 257).astype(np.uint8)
    return luma_u8(image) if image.ndim == 3 else image


def written_gray_u8(image: np.ndarray) -> np.ndarray:
    """An image as fusion writes it (uint8 or uint16, gray or RGB) -> 8-bit luma."""
    return to_gray_u8(image, 65535 if image.dtype == np.uint16 else 255)


@dataclass
class Evaluation:
    rows: list[dict[str, float | str]]
    failed: list[str]

    def metric_names(self) -> list[str]:
        return [name for name in METRIC_NAMES if self.rows and name in self.rows[0]]

    def summary(self) -> dict[str, tuple[float, float]]:
        """Per metric (mean, population std), NaN-aware (MS-SSIM is NaN on small images)."""
        out = {}
        for name in self.metric_names():
            values = np.array([float(r[name]) for r in self.rows], np.float64)
            ok = values[~np.isnan(values)]
            out[name] = (float(ok.mean()), float(ok.std())) if ok.size else (float("nan"), float("nan"))
        return out

    def table(self) -> str:
        lines = [f"{'metric':<8} {'mean':>10} {'std':>10}"]
        lines += [f"{k:<8} {m:>10.4f} {s:>10.4f}" for k, (m, s) in self.summary().items()]
        return "\n".join(lines)


def evaluate_folders(
    ir_dir: str | os.PathLike, vi_dir: str | os.PathLike, fused_dir: str | os.PathLike, progress: bool = True
) -> Evaluation:
    """Pair sources by stem, then each pair with ``fused_dir/<stem>.*``; every source pair
    needs a fused image (a missing one is an error, not a silent skip)."""
    pairs, _ = find_pairs(ir_dir, vi_dir, strict=True)
    fused = images_by_stem(Path(fused_dir))
    missing = [str(Path(fused_dir) / f"{p.stem}.png") for p in pairs if p.stem not in fused]
    if missing:
        raise PairError(f"fused image(s) missing: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    result = Evaluation([], [])
    for pair in tqdm(pairs, desc="evaluate", unit="pair", disable=not progress):
        try:
            a, b, f = gray_u8(pair.ir), gray_u8(pair.vi), gray_u8(fused[pair.stem])
            if not a.shape == b.shape == f.shape:
                raise ImageError(f"{fused[pair.stem]}: size {f.shape[::-1]} differs from its sources' {a.shape[::-1]}")
        except ImageError as exc:
            result.failed.append(str(exc))
            continue
        result.rows.append({"name": pair.stem, **compute_metrics(a, b, f)})
    return result


def score_fused(
    pair: ImagePair, fused: np.ndarray, names: tuple[str, ...] = METRIC_NAMES, device: str = "cpu"
) -> dict[str, float]:
    """Metrics of a fused image (as written: uint8/uint16, gray or RGB) against its sources;
    on a CUDA ``device`` with the torch suite (the same values within 1e-4), else NumPy's."""
    if not names:
        return {}
    return score_images(gray_u8(pair.ir), gray_u8(pair.vi), fused, names, device)


def score_images(
    ir_u8: np.ndarray, vi_u8: np.ndarray, fused: np.ndarray, names: tuple[str, ...] = METRIC_NAMES, device: str = "cpu"
) -> dict[str, float]:
    """``score_fused`` with the sources as 8-bit luma already (``to_gray_u8`` of what was read)."""
    if not names:
        return {}
    f = written_gray_u8(fused)
    if str(device).startswith("cuda"):
        from .metrics_torch import compute_metrics as compute_on_device

        return compute_on_device(ir_u8, vi_u8, f, names, device=device)
    return compute_metrics(ir_u8, vi_u8, f, names)


def evaluate_generator(
    generator: Generator,
    pairs: list[ImagePair],
    names: tuple[str, ...] = METRIC_NAMES,
    tiles: TileConfig | None = TileConfig(),
    progress: bool = True,
) -> Evaluation:
    """Fuse each pair in memory (as ``dwsfusion fuse`` writes it) and score it: the fixed
    evaluation behind registration and the promotion gate."""
    result = Evaluation([], [])
    for pair in tqdm(pairs, desc="evaluate", unit="pair", disable=not progress):
        try:
            fused = fuse_pair(generator, pair, tiles=tiles)
        except ImageError as exc:
            result.failed.append(str(exc))
            continue
        result.rows.append({"name": pair.stem, **score_fused(pair, fused, names)})
    return result


def rows_csv(rows: list[dict], columns: list[str]) -> str:
    """One CSV line per row in the given column order (other keys ignored), with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_rows_csv(rows: list[dict], columns: list[str], path: str | os.PathLike) -> Path:
    """``rows_csv`` written atomically."""
    return atomic_write(path, rows_csv(rows, columns))


def write_csv(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Columns ``name`` then the metrics (in METRIC_NAMES order)."""
    return write_rows_csv(evaluation.rows, ["name", *evaluation.metric_names()], path)
