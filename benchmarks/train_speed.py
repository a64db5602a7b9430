"""Training samples/s under Ray Train (one worker) against the bare ``train_step`` loop, on the
same batches in the same order.

Bare: ``train_step`` in this process with all the machine's threads, reading the batches that
Ray Train's worker reads (the same materialized dataset, batch size, shuffle buffer and
per-epoch seed) from the same seeded networks. Ray Train: ``dwsfusion train``'s loop
(``pipelines.train.run_training``), one worker holding all the machine's CPUs; its figure is
the loop's own ``samples_per_second_per_worker`` (the steps and their data waits; not the
per-epoch validation). Both figures are the same statistic: each epoch's samples over its wall
time, median over the epochs after the first; the bare loop runs before and after Ray Train,
both sets counted, to bracket the drift of a shared machine. Each epoch's mean generator loss is
recorded for both: equal losses show equal batches. (Until 2026-11-27 the bare loop cycled a
fixed dozen batches while Ray's read the whole stream, so the two trained apart; and a step's
cost depends on the weights: as training spreads the per-pixel dilations over more integer
levels, the adaptive convolutions read more slices, or fall back to ``grid_sample``.)
``--adversarial 0 --batch 16 --patch 240`` is the reproduction's generator-only step.
Patches: ../shared RoadScene when present, else generated scenes.
Writes benchmarks/results/train_speed.json (with ``--tag T``: train_speed_T.json).

Run: python benchmarks/train_speed.py [--batch 8 --patch 176 --steps 12 --epochs 4 --adversarial 0.1 --tag T]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from common import SHARED, Stopwatch, write_result

from data_prep import PrepConfig, run_prep
from dwsfusion.loss_weights import LossWeights
from dwsfusion.samples import write_samples
from dwsfusion.step import build_networks, build_optimizers, train_step


def bare_epochs(train_data, config, epochs: int, weights: LossWeights) -> list[dict]:
    """The bare loop on the batches Ray Train's worker reads: the same dataset, read by the
    worker's own ``_batches`` and ``_to_images`` with its batch size, shuffle buffer and
    per-epoch seed, from the same seeded networks, so both loops follow the same trajectory.
    Each epoch: samples over its wall time (reading the batches included, as in Ray's figure)
    and its mean generator loss, which shows that the two loops saw the same batches."""
    from pipelines.train import _batches, _to_images  # the worker's own batching, so the batches are the same

    torch.manual_seed(config.seed)
    nets = build_networks()
    opts = build_optimizers(nets, config.lr_g, config.lr_d)
    rows = []
    for epoch in range(epochs):
        started, samples, loss = Stopwatch(), 0, 0.0
        seed, limit = config.seed + epoch, config.max_steps_per_epoch
        for batch in _batches(train_data, config.per_worker_batch(), seed, config.shuffle_buffer, limit):
            ir, vi = _to_images(batch, torch.device("cpu"), config.channels_last)
            loss += train_step(nets, opts, ir, vi, weights)["g_total"] * ir.shape[0]
            samples += ir.shape[0]
        rows.append({"samples_per_second": samples / started.elapsed(), "g_total": loss / samples})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=176)
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch (and timed bare steps)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--adversarial", type=float, default=0.1, help="0: the generator-only step (the reproduction)")
    parser.add_argument("--tag", default="", help="results go to train_speed_<tag>.json (another configuration)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    roadscene = SHARED / "data" / "RoadScene"
    source = roadscene if (roadscene / "ir").is_dir() else write_samples(work / "src", count=8, seed=0)
    prep = PrepConfig(source=str(source), out=str(work / "patches"), patch_size=args.patch, stride=64, val_fraction=0.1)
    run_prep(prep, log=lambda *_: None)
    import ray

    ray.shutdown()  # prep's local Ray has no dashboard; Ray Train's runs with one, as `dwsfusion train` starts it

    from data_prep.ray_session import ensure_ray
    from pipelines.config import TrainConfig
    from pipelines.train import load_inputs, load_train_state, run_training

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
        loss={"adversarial": args.adversarial},
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    ensure_ray(cpus_needed=cpus + 2)  # as run_training starts it: Ray is up for both loops
    inputs = load_inputs(config)
    weights = LossWeights(adversarial=args.adversarial)
    bare_before = bare_epochs(inputs[0], config, args.epochs, weights)
    started = Stopwatch()
    result = run_training(config, inputs=inputs, progress=False)
    history = load_train_state(result.checkpoint)["history"]
    ray_speed = statistics.median(h["samples_per_second_per_worker"] for h in history[1:])
    # The bare loop again after Ray: this shared box drifts by 10 % within minutes, so the bare
    # figure brackets the Ray run (median of both sets' epochs after their first).
    bare_after = bare_epochs(inputs[0], config, args.epochs, weights)
    bare = statistics.median(r["samples_per_second"] for r in bare_before[1:] + bare_after[1:])
    write_result(
        f"train_speed_{args.tag}" if args.tag else "train_speed",
        {
            "input": f"{Path(source).name} patches {args.patch}², batch {args.batch}, {args.steps} steps x "
            f"{args.epochs} epochs, {cpus} threads, adversarial weight {args.adversarial}",
            "bare_samples_per_second": bare,
            "bare_samples_per_second_by_epoch": {
                "before_ray": [r["samples_per_second"] for r in bare_before],
                "after_ray": [r["samples_per_second"] for r in bare_after],
            },
            "ray_samples_per_second": ray_speed,
            "ray_samples_per_second_by_epoch": [h["samples_per_second_per_worker"] for h in history],
            "ray_over_bare": ray_speed / bare,
            # the same batches in the same order: each epoch's mean generator loss, bare and Ray
            "g_total_by_epoch": {
                "bare": [r["g_total"] for r in bare_before],
                "ray": [h["train_g_total"] for h in history],
            },
            "ray_fit_wall_s": started.elapsed(),
            "goal_ratio": 0.9,
        },
    )


if __name__ == "__main__":
    main()
