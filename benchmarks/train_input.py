"""Training samples/s of one worker fed by the Parquet stream vs by in-memory tensors.

The same ``train_step`` loop twice on the same patches: (a) batches pre-built in memory,
(b) ``read_patches(...).iter_torch_batches()`` streaming the shards (Ray Data prefetches in
background tasks). Goal: the stream adds <= 10 % to step time. Patches come from
../shared/data (TNO) when present, else from generated scenes.
Run: python benchmarks/train_input.py [--steps 12 --batch 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import ray
import torch
from common import SHARED, Stopwatch, write_result

from data_prep import PrepConfig, read_patches, run_prep
from dwsfusion.losses import LossWeights
from dwsfusion.samples import write_samples
from dwsfusion.step import build_networks, build_optimizers, train_step


def timed_steps(batches, steps: int) -> float:
    """Seconds per step over ``steps`` steps after two warm-up steps (data fetch included)."""
    torch.manual_seed(0)
    nets = build_networks()
    opts = build_optimizers(nets, 1e-3, 1e-3)
    iterator = iter(batches)
    for _ in range(2):
        batch = next(iterator)
        train_step(
            nets, opts, batch["ir"].float().div(255)[:, None], batch["vi"].float().div(255)[:, None], LossWeights()
        )
    start = Stopwatch()
    for _ in range(steps):
        batch = next(iterator)
        train_step(
            nets, opts, batch["ir"].float().div(255)[:, None], batch["vi"].float().div(255)[:, None], LossWeights()
        )
    return start.elapsed() / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="train-input-"))
    try:
        source = SHARED / "data" / "TNO"
        if not source.is_dir():
            source = write_samples(work / "samples", count=12, seed=0)
        run_prep(
            PrepConfig(source=str(source), out=str(work / "patches"), patch_size=192, stride=64, val_fraction=0.1),
            log=lambda *_: None,
        )
        dataset = read_patches(str(work / "patches"), "train")
        needed = (args.steps + 2) * args.batch
        rows = dataset.take_batch(needed, batch_format="numpy")
        assert len(rows["ir"]) == needed, f"only {len(rows['ir'])} patches; need {needed}"
        memory = [
            {
                "ir": torch.from_numpy(rows["ir"][i : i + args.batch].copy()),
                "vi": torch.from_numpy(rows["vi"][i : i + args.batch].copy()),
            }
            for i in range(0, needed, args.batch)
        ]
        in_memory = timed_steps(memory, args.steps)
        stream = dataset.iter_torch_batches(batch_size=args.batch, drop_last=True, prefetch_batches=2)
        streamed = timed_steps(stream, args.steps)
        write_result(
            "train_input",
            {
                "input": f"{source.name} patches 192x192, batch {args.batch}, {args.steps} timed steps, 1 worker",
                "seconds_per_step_in_memory": in_memory,
                "seconds_per_step_parquet_stream": streamed,
                "samples_per_second_in_memory": args.batch / in_memory,
                "samples_per_second_parquet_stream": args.batch / streamed,
                "stream_overhead_fraction": streamed / in_memory - 1,
                "goal_overhead_fraction": 0.10,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    main()
