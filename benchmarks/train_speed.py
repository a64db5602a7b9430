"""Training samples/s under Ray Train (one worker) against the bare ``train_step`` loop, on the
same patches with the same batch.

Bare: the prepared train patches held in memory, ``train_step`` in this process with all the
machine's threads, the same epochs of the same steps. Ray Train: ``dwsfusion train``'s loop
(``pipelines.train.run_training``), one worker holding all the machine's CPUs, patches held in
the object store and streamed through ``iter_torch_batches``; its figure is the loop's own
``samples_per_second_per_worker`` (the steps and their data waits; not the per-epoch
validation). Both figures are the same statistic: each epoch's samples over its wall time,
median over the epochs after the first; the bare loop runs before and after Ray Train, both
sets counted, to bracket the drift of a shared machine. (Until 2026-11-26 the bare figure was the median
single step, which leaves out the slower steps that the Ray figure includes.) Patches: ../shared
RoadScene when present, else generated scenes.
Writes benchmarks/results/train_speed.json.

Run: python benchmarks/train_speed.py [--batch 8 --patch 176 --steps 12 --epochs 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import SHARED, write_result

from data_prep import PrepConfig, read_patches, run_prep
from dwsfusion.loss_weights import LossWeights
from dwsfusion.samples import write_samples
from dwsfusion.step import build_networks, build_optimizers, train_step


def bare_samples_per_second(patches: dict[str, np.ndarray], batch: int, steps: int, epochs: int) -> list[float]:
    """Samples/s of each epoch of ``steps`` bare steps, timed as a whole like Ray Train's
    ``samples_per_second_per_worker`` (its loop's samples over its wall time), so that the two
    figures are the same statistic."""
    torch.manual_seed(0)
    nets = build_networks()
    opts = build_optimizers(nets)
    ir = torch.from_numpy(patches["ir"]).float().div(255)[:, None]
    vi = torch.from_numpy(patches["vi"]).float().div(255)[:, None]
    speeds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        for i in range(steps):
            rows = torch.arange((epoch * steps + i) * batch, (epoch * steps + i + 1) * batch) % len(ir)
            train_step(nets, opts, ir[rows], vi[rows], LossWeights())
        speeds.append(steps * batch / (time.perf_counter() - started))
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=176)
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch (and timed bare steps)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    roadscene = SHARED / "data" / "RoadScene"
    source = roadscene if (roadscene / "ir").is_dir() else write_samples(work / "src", count=8, seed=0)
    prep = PrepConfig(source=str(source), out=str(work / "patches"), patch_size=args.patch, stride=64, val_fraction=0.1)
    run_prep(prep, log=lambda *_: None)
    patches = read_patches(prep.out, "train").take_batch(args.batch * args.steps, batch_format="numpy")
    bare_before = bare_samples_per_second(patches, args.batch, args.steps, args.epochs)

    from pipelines.config import TrainConfig
    from pipelines.train import load_train_state, run_training

    config = TrainConfig(
        data=prep.out,
        storage_path=str(work / "storage"),
        name="speed",
        num_workers=1,
        cpus_per_worker=cpus,
        batch_size=args.batch,
        epochs=args.epochs,
        max_steps_per_epoch=args.steps,
        materialize=True,
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    started = time.perf_counter()
    result = run_training(config, progress=False)
    history = load_train_state(result.checkpoint)["history"]
    ray_speed = statistics.median(h["samples_per_second_per_worker"] for h in history[1:])
    # The bare loop again after Ray: this shared box drifts by 10 % within minutes, so the bare
    # figure brackets the Ray run (median of both sets' epochs after their first).
    bare_after = bare_samples_per_second(patches, args.batch, args.steps, args.epochs)
    bare = statistics.median(bare_before[1:] + bare_after[1:])
    write_result(
        "train_speed",
        {
            "input": f"{Path(source).name} patches {args.patch}², batch {args.batch}, {args.steps} steps x "
            f"{args.epochs} epochs, {cpus} threads",
            "bare_samples_per_second": bare,
            "bare_samples_per_second_by_epoch": {"before_ray": bare_before, "after_ray": bare_after},
            "ray_samples_per_second": ray_speed,
            "ray_samples_per_second_by_epoch": [h["samples_per_second_per_worker"] for h in history],
            "ray_over_bare": ray_speed / bare,
            "ray_fit_wall_s": time.perf_counter() - started,
            "goal_ratio": 0.9,
        },
    )


if __name__ == "__main__":
    main()
