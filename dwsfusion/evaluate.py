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
from .metrics import METRIC_NAMES, compute_metrics
from .pairs import PairError, find_pairs, images_by_stem


def gray_u8(path: Path) -> np.ndarray:
    """Any 8/16-bit gray or colour file -> 8-bit luma (PIL's convert('L') for 8-bit RGB)."""
    image, max_value = read_image(path)
    if max_value != 255:
        image = np.rint(image.astype(np.float64) / 257).astype(np.uint8)
    return luma_u8(image) if image.ndim == 3 else image


@dataclass
class Evaluation:
    rows: list[dict[str, float | str]]
    failed: list[str]

    def summary(self) -> dict[str, tuple[float, float]]:
        """Per metric (mean, population std), NaN-aware (MS-SSIM is NaN on small images)."""
        out = {}
        for name in METRIC_NAMES:
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


def write_csv(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Columns ``name`` then METRIC_NAMES; written to a temp name, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["name", *METRIC_NAMES], lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation.rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)
    return path
