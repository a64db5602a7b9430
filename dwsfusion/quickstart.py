"""The README's first command: samples (or your folder) -> short training (or your
checkpoint) -> fused images -> metric table beside mean- and max-fusion baselines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .checkpoints import load_generator
from .color import write_image
from .evaluate import Evaluation, evaluate_folders, write_csv
from .fuse import compose_output, load_pair
from .pairs import find_pairs, resolve_source
from .quicktrain import QuickTrainConfig, quick_train
from .samples import write_samples
from .stream import fuse_pairs

BASELINES = {"mean": lambda ir, vi: (ir + vi) / 2, "max": np.maximum}


def write_baselines(pairs, out_root: Path) -> dict[str, Path]:
    """Pixel-wise mean and max fusion of the same pairs: the floor a trained fuser must beat."""
    folders = {name: out_root / name for name in BASELINES}
    for pair in pairs:
        source = load_pair(pair)  # decoded once for every baseline
        for name, rule in BASELINES.items():
            # round, not truncate: k/255 * 255 may land just below k in float32
            image = compose_output(source, rule(source.ir, source.vis_y), rounding="round")
            write_image(folders[name] / f"{pair.stem}.png", image)
    return folders


def comparison_table(results: dict[str, Evaluation]) -> str:
    summaries = {name: ev.summary() for name, ev in results.items()}
    metrics = next(iter(summaries.values())).keys()
    lines = [f"{'metric':<8}" + "".join(f"{name:>12}" for name in summaries)]
    for metric in metrics:
        lines.append(f"{metric:<8}" + "".join(f"{s[metric][0]:>12.4f}" for s in summaries.values()))
    return "\n".join(lines)


def run_quickstart(
    workdir: str | os.PathLike = "runs/quickstart",
    source: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    train: QuickTrainConfig = QuickTrainConfig(),
    progress: bool = True,
) -> dict[str, object]:
    workdir = Path(workdir)
    root = Path(source) if source else write_samples(workdir / "samples")
    ir_dir, vi_dir = resolve_source(root)
    pairs, _ = find_pairs(ir_dir, vi_dir, strict=True)
    if checkpoint is None:
        checkpoint, _ = quick_train(pairs, workdir / "checkpoints" / "quicktrain.pt", train, progress)
    generator = load_generator(checkpoint)
    fused_dir = workdir / "fused"
    report = fuse_pairs(generator, pairs, fused_dir, progress=progress)
    folders = {"dwsfusion": fused_dir, **write_baselines(pairs, workdir / "baselines")}
    results = {name: evaluate_folders(ir_dir, vi_dir, folder, progress=False) for name, folder in folders.items()}
    csv_path = write_csv(results["dwsfusion"], workdir / "metrics.csv")
    return {
        "checkpoint": Path(checkpoint),
        "fused_dir": fused_dir,
        "metrics_csv": csv_path,
        "failed": report.failed,
        "table": comparison_table(results),
    }
