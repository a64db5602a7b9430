"""Many fusion methods scored by one metric code on the same pairs: the numbers of a leaderboard.

A method is a name and where its fused images come from (``Method``): a folder of fused
images, a generator fused on the fly (a checkpoint, or a registered model the caller loads),
or a built-in baseline (``mean``, ``max``, ``ir``, ``vi``). Every method goes through the same
path, stated in ``CONVENTIONS``: the image as it is (or would be) written, reduced to 8-bit
luma, scored against the sources' 8-bit luma by ``dwsfusion.metrics``. Nothing here draws or
writes (``dwsfusion.compare_report``) or knows Ray and MLflow (``pipelines.compare``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon
from torch.utils.flop_counter import FlopCounterMode

from .color import IMAGE_SUFFIXES, ImageError, read_image
from .constants import BASELINE_METHODS, METRIC_NAMES
from .errors import UsageError
from .evaluate import gray_u8, score_images
from .fuse import compose_output, fuse_luma, load_pair
from .model import Generator
from .pairs import ImagePair
from .quickstart import BASELINES
from .tiling import TileConfig

BUILTIN = BASELINE_METHODS
LOWER_IS_BETTER = frozenset({"MSE", "Nabf"})  # every other metric: higher is better
MISSING_POLICIES = ("error", "common")
CONVENTIONS = (
    "Sources and results are scored as 8-bit luma: a colour image by ITU-R BT.601 "
    "(Y = 0.299 R + 0.587 G + 0.114 B, rounded, as PIL's convert('L')), a 16-bit image divided by 257 and rounded.",
    "Every metric sees the integer values as float64 in [0, 255] (dwsfusion.metrics: the DWSFusion authors' "
    "conventions, which reproduce their per-image tables).",
    "A result must have its sources' size: nothing is resized; another size is an error naming the file.",
    "A folder's images are matched to the pairs by stem, whatever the extension (case ignored; digits by value, "
    "so 1.png matches 01).",
    "A model is fused on the fly as `dwsfusion fuse` writes it (VIS chroma kept, truncated to integers, "
    "large images in tiles), then scored as that file would be.",
    "Baselines: mean and max of the IR and VIS luma (VIS chroma kept, rounded); ir and vi are the sources themselves.",
    "MS-SSIM is NaN on images under 161 px a side; its mean and test skip those pairs, and say so.",
    "Ranks: 1 is best, equal means share a rank (lower is better for MSE and Nabf, higher for the rest). The paired "
    "test is the two-sided "
    "Wilcoxon signed-rank test of each method's per-pair values against the best method's.",
)


class CompareError(UsageError):
    """A method that cannot be compared: names the method, the file and the reason."""


@dataclass(frozen=True)
class Method:
    """One contestant: ``kind`` is 'folder', 'model' (a checkpoint or a models:/ URI) or 'baseline'."""

    name: str
    source: str
    kind: str

    @classmethod
    def parse(cls, spec: str) -> Method:
        """``NAME=SOURCE``: a folder of fused images, a checkpoint file or training checkpoint
        folder, a ``models:/`` / ``runs:/`` URI, or one of the built-in baselines."""
        name, sep, source = spec.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not name or not source:
            raise CompareError(
                f"--method {spec!r}: expected NAME=SOURCE (a folder, a checkpoint, models:/..., or "
                f"one of {', '.join(BUILTIN)})"
            )
        if not method_name_ok(name):
            raise CompareError(f"--method {spec!r}: a name takes letters, digits, spaces and . _ - only")
        if source in BUILTIN:
            return cls(name, source, "baseline")
        if source.startswith(("models:/", "runs:/")):
            return cls(name, source, "model")
        path = Path(source).expanduser()
        if path.is_file():
            return cls(name, str(path), "model")
        if path.is_dir():
            images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file())
            return cls(name, str(path), "folder" if images else "model")  # no image: a training checkpoint
        raise CompareError(f"--method {name}={source}: no such file or folder, and not one of {', '.join(BUILTIN)}")


def _match_key(stem: str) -> str:
    """The name a stem is matched by: case ignored, a number by its value (1 == 01)."""
    stem = stem.lower()
    return str(int(stem)) if stem.isdigit() else stem


def folder_index(folder: Path) -> dict[str, Path]:
    """The images of a method's folder by match key; two images with one key are refused by name."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            key = _match_key(path.stem)
            if key in found:
                raise CompareError(f"{path}: matches the same pair as {found[key].name}")
            found[key] = path
    return found


# ------------------------------------------------------------------ what each method makes of a pair
@dataclass
class Fuser:
    """Makes a method's image of a pair, as written (uint8/uint16, gray or RGB)."""

    method: Method
    generator: Generator | None = None
    index: dict[str, Path] = field(default_factory=dict)
    tiles: TileConfig | None = field(default_factory=TileConfig)

    def image(self, pair: ImagePair) -> tuple[np.ndarray, str]:
        """(image, label): the label names what was read, for an error."""
        kind = self.method.kind
        if kind == "folder":
            path = self.index.get(_match_key(pair.stem))
            if path is None:
                raise ImageError(f"{self.method.source}: no image for pair {pair.stem}")
            return read_image(path)[0], str(path)
        if self.method.source in ("ir", "vi"):
            path = pair.ir if self.method.source == "ir" else pair.vi
            return read_image(path)[0], str(path)
        source = load_pair(pair)
        if kind == "baseline":
            luma = BASELINES[self.method.source](source.ir, source.vis_y)
            return compose_output(source, luma, rounding="round"), f"{self.method.source} of {pair.stem}"
        luma = fuse_luma(self.generator, source.ir, source.vis_y, self.tiles)
        return compose_output(source, luma), f"{self.method.name} on {pair.stem}"


def build_fusers(methods: list[Method], load_generator: Callable[[str], Generator]) -> list[Fuser]:
    """One ``Fuser`` per method; ``load_generator`` turns a model method's source into a
    generator (a checkpoint here; a models:/ URI through MLflow in ``pipelines.compare``)."""
    fusers = []
    for method in methods:
        if method.kind == "folder":
            fusers.append(Fuser(method, index=folder_index(Path(method.source))))
        elif method.kind == "model":
            fusers.append(Fuser(method, generator=load_generator(method.source).eval()))
        else:
            fusers.append(Fuser(method))
    return fusers


def missing_images(fusers: list[Fuser], pairs: list[ImagePair]) -> dict[str, list[str]]:
    """Per folder method, the pairs it has no image for (before any scoring)."""
    missing = {}
    for fuser in fusers:
        if fuser.method.kind == "folder":
            absent = [p.stem for p in pairs if _match_key(p.stem) not in fuser.index]
            if absent:
                missing[fuser.method.name] = absent
    return missing


# ------------------------------------------------------------------ scoring
@dataclass
class Scores:
    """Every method's per-pair metrics (rows: ``name`` then the metrics) and what failed."""

    methods: list[Method]
    metrics: tuple[str, ...]
    rows: dict[str, list[dict]] = field(default_factory=dict)  # method name -> one row per pair
    failures: dict[str, list[str]] = field(default_factory=dict)  # method name -> "<file>: <reason>"

    @classmethod
    def empty(cls, fusers: list[Fuser], metrics: tuple[str, ...]) -> Scores:
        return cls([f.method for f in fusers], metrics, {f.method.name: [] for f in fusers}, {})

    def merge(self, other: Scores) -> None:
        """Add another part's scores (e.g. a Ray actor's chunk of pairs); rows stay in pair order."""
        for name, rows in other.rows.items():
            self.rows.setdefault(name, []).extend(rows)
            self.rows[name].sort(key=lambda r: r["name"])
        for name, problems in other.failures.items():
            self.failures.setdefault(name, []).extend(problems)


def score_pairs(
    fusers: list[Fuser], pairs: Iterable[ImagePair], metrics: tuple[str, ...] = METRIC_NAMES, on_pair=None
) -> Scores:
    """Each pair's sources are decoded once, then every method's image of it is scored;
    ``on_pair`` (if given) is called after each pair (a progress bar's update)."""
    scores = Scores.empty(fusers, metrics)
    for pair in pairs:
        try:
            ir_u8, vi_u8 = gray_u8(pair.ir), gray_u8(pair.vi)
        except ImageError as exc:
            for fuser in fusers:
                scores.failures.setdefault(fuser.method.name, []).append(str(exc))
            continue
        for fuser in fusers:
            try:
                image, label = fuser.image(pair)
                if image.shape[:2] != ir_u8.shape:
                    raise ImageError(
                        f"{label}: size {image.shape[1]}x{image.shape[0]} differs from its sources' "
                        f"{ir_u8.shape[1]}x{ir_u8.shape[0]}"
                    )
                row = {"name": pair.stem, **score_images(ir_u8, vi_u8, image, metrics)}
            except (ImageError, OSError) as exc:
                scores.failures.setdefault(fuser.method.name, []).append(str(exc))
                continue
            scores.rows[fuser.method.name].append(row)
        if on_pair is not None:
            on_pair()
    for rows in scores.rows.values():
        rows.sort(key=lambda r: r["name"])
    return scores


# ------------------------------------------------------------------ the leaderboard's numbers
@dataclass
class Entry:
    """One method's figures for one metric."""

    mean: float
    std: float
    pairs: int  # pairs behind the mean (fewer only where the metric is NaN, e.g. MS-SSIM on small images)
    rank: int
    p_value: float | None  # paired test against the best; None for the best itself


@dataclass
class Leaderboard:
    methods: list[str]  # in the order given
    metrics: tuple[str, ...]
    pairs: list[str]  # the pairs every number is over
    entries: dict[str, dict[str, Entry]]  # method -> metric -> Entry
    best: dict[str, str]  # metric -> method
    excluded: dict[str, list[str]]  # method -> why it is not on the board
    left_out: list[str] = field(default_factory=list)  # the 'common' policy's pairs left out, and why


def _paired_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired values (NaN pairs dropped); 1.0 when equal."""
    ok = ~(np.isnan(a) | np.isnan(b))
    if not np.any(a[ok] != b[ok]):
        return 1.0
    return float(wilcoxon(a[ok], b[ok]).pvalue)


def leaderboard(scores: Scores, policy: str = "error") -> Leaderboard:
    """Means, ranks and paired tests over the pairs every method on the board was scored on.
    ``policy`` 'error': a method with any pair missing or failed is left off the board (named
    with its reasons); 'common': every method is scored on the pairs all of them have, and the
    pairs left out are listed."""
    if policy not in MISSING_POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(MISSING_POLICIES)}")
    excluded = {name: problems for name, problems in scores.failures.items() if problems and policy == "error"}
    names = [m.name for m in scores.methods if m.name not in excluded]
    if not names:
        raise CompareError(
            "no method was scored on every pair: "
            + "; ".join(f"{name}: {problems[0]}" for name, problems in excluded.items())
        )
    common = set.intersection(*({r["name"] for r in scores.rows[n]} for n in names))
    if not common:
        raise CompareError("the methods share no scored pair")
    pairs = sorted(common)
    values = {
        n: {k: np.array([float(r[k]) for r in scores.rows[n] if r["name"] in common]) for k in scores.metrics}
        for n in names
    }
    entries: dict[str, dict[str, Entry]] = {n: {} for n in names}
    best = {}
    for metric in scores.metrics:
        means = {
            n: float(np.nanmean(values[n][metric])) if np.any(~np.isnan(values[n][metric])) else math.nan for n in names
        }
        sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
        key = {n: (math.isnan(means[n]), sign * means[n] if means[n] == means[n] else 0.0) for n in names}
        order = sorted(names, key=key.get)
        best[metric] = order[0]
        for name in order:
            rank = 1 + sum(key[other] < key[name] for other in names)  # equal means share a rank
            column = values[name][metric]
            ok = column[~np.isnan(column)]
            p_value = None if name == order[0] else _paired_p(column, values[order[0]][metric])
            std = float(ok.std()) if ok.size else math.nan
            entries[name][metric] = Entry(means[name], std, int(ok.size), rank, p_value)
    left_out = [] if policy == "error" else [p for problems in scores.failures.values() for p in problems]
    return Leaderboard(names, scores.metrics, pairs, entries, best, excluded, left_out)


# ------------------------------------------------------------------ what a model costs
PROBE_SIZE = (480, 640)  # (H, W): the cost table's pair


def model_costs(generator: Generator, repeats: int = 5) -> dict[str, float]:
    """Parameters, FLOPs of one 640x480 pair (convolutions and matrix products as
    torch.utils.flop_counter counts them: a multiply-add is 2; elementwise work and the FFT are
    not counted) and seconds per pair here (median of ``repeats`` runs after one warm-up, fusion of
    the luma planes only, as ``dwsfusion fuse`` runs it)."""
    rng = np.random.default_rng(0)
    ir, vi = (rng.random(PROBE_SIZE, dtype=np.float32) for _ in range(2))
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        generator.fuse(torch.from_numpy(ir)[None, None], torch.from_numpy(vi)[None, None])
    fuse_luma(generator, ir, vi)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fuse_luma(generator, ir, vi)
        seconds.append(time.perf_counter() - started)
    return {
        "parameters": float(sum(p.numel() for p in generator.parameters())),
        "gflops_640x480": counter.get_total_flops() / 1e9,
        "seconds_640x480": float(np.median(seconds)),
    }


def method_name_ok(name: str) -> bool:
    """A method's name, as it becomes a CSV cell, a file-name part and an MLflow metric key."""
    return re.fullmatch(r"[\w.\- ]+", name) is not None
