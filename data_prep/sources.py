"""Find the pairs of a source folder (MSRS layout or ir/ + vi/), fingerprint and split them."""

from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwsfusion.pairs import PairError, find_pairs, resolve_source

TRAINVAL, TRAIN, VAL, TEST = "trainval", "train", "val", "test"


@dataclass(frozen=True)
class SourcePair:
    split: str
    stem: str
    ir: str
    vi: str
    ir_sha256: str = ""
    vi_sha256: str = ""
    ir_bytes: int = 0
    vi_bytes: int = 0


def _groups(root: Path) -> list[tuple[str, Path, Path]]:
    """(group, ir_dir, vi_dir): MSRS gives train/ (-> train+val) and optionally test/."""
    if (root / "train").is_dir():
        groups = [(TRAINVAL, *resolve_source(root / "train"))]
        if (root / "test").is_dir():
            groups.append((TEST, *resolve_source(root / "test")))
        return groups
    return [(TRAINVAL, *resolve_source(root))]


def discover(source: str | Path) -> tuple[list[SourcePair], list[dict]]:
    """All pairs by stem, plus the files without a partner as rejections (never dropped)."""
    root = Path(source)
    if not root.is_dir():
        raise PairError(f"{root}: not a folder")
    pairs, rejected = [], []
    for group, ir_dir, vi_dir in _groups(root):
        found, problems = find_pairs(ir_dir, vi_dir, strict=False)
        pairs += [SourcePair(group, p.stem, str(p.ir), str(p.vi)) for p in found]
        for problem in problems:
            rejected.append(
                {"split": group, "stem": problem.path.stem, "files": [str(problem.path)], "reason": problem.reason}
            )
    if not pairs:
        raise PairError(f"{root}: no image pairs found")
    return pairs, rejected


def _sha256(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def fingerprint(pairs: list[SourcePair], threads: int = 4) -> list[SourcePair]:
    """Checksums and sizes of every file (hashlib releases the GIL: threads suffice)."""
    with ThreadPoolExecutor(threads) as pool:
        irs = list(pool.map(_sha256, [p.ir for p in pairs]))
        vis = list(pool.map(_sha256, [p.vi for p in pairs]))
    return [
        SourcePair(p.split, p.stem, p.ir, p.vi, ir[0], vi[0], ir[1], vi[1])
        for p, ir, vi in zip(pairs, irs, vis, strict=True)
    ]


def assign_splits(pairs: list[SourcePair], val_fraction: float, seed: int) -> list[SourcePair]:
    """Train/val by source image (never by patch), deterministic from the seed; test stays test."""
    trainval = sorted(p.stem for p in pairs if p.split == TRAINVAL)
    n_val = round(val_fraction * len(trainval))
    if val_fraction > 0 and len(trainval) >= 2:
        n_val = max(n_val, 1)
    order = np.random.default_rng(seed).permutation(len(trainval))
    val = {trainval[i] for i in order[:n_val]}
    out = []
    for p in pairs:
        split = p.split if p.split != TRAINVAL else (VAL if p.stem in val else TRAIN)
        out.append(dataclasses.replace(p, split=split))
    return sorted(out, key=lambda p: (p.split, p.stem))
