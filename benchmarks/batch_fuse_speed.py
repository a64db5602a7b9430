"""Pairs per second of ``dwsfusion fuse --input SHARDS`` (Ray Data actors) against a bare
loop doing the same work per pair in one process (read, fuse, write PNG, metric suite).

    python benchmarks/batch_fuse_speed.py [--actors 1 2] [--metrics all|none] [--shards 4]

Uses the TNO + RoadScene pairs of ../shared packed into ``--shards`` .tar shards (75 pairs) and
the release weights. Wall time of the batch run includes Ray start-up, actor start and packing
the output archive. Writes benchmarks/results/batch_fuse_speed_<metrics>.json.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

import torch
from common import SHARED, Stopwatch, link_shared_pairs, write_result

from dwsfusion.checkpoints import load_generator
from dwsfusion.color import write_image
from dwsfusion.evaluate import score_fused
from dwsfusion.fuse import fuse_pair
from dwsfusion.metrics import METRIC_NAMES
from dwsfusion.pairs import find_pairs

WEIGHTS = SHARED / "official" / "dwsfusion_official_generator.pth"


def bare_loop(source: Path, out: Path, metrics: tuple[str, ...]) -> float:
    generator = load_generator(WEIGHTS)
    pairs, _ = find_pairs(source / "ir", source / "vi")
    start = Stopwatch()
    for pair in pairs:
        fused = fuse_pair(generator, pair)
        write_image(out / f"{pair.stem}.png", fused)
        score_fused(pair, fused, metrics)
    return len(pairs) / start.elapsed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--metrics", choices=("all", "none"), default="all")
    parser.add_argument("--shards", type=int, default=4, help="tar shards the pairs are packed into")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        raise SystemExit(f"{WEIGHTS} not found: this benchmark needs ../shared")
    import ray

    from pipelines.batch.run import FuseJob, batch_fuse

    metrics = METRIC_NAMES if args.metrics == "all" else ()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        link_shared_pairs(tmp / "src")
        stems = sorted(p.name for p in (tmp / "src" / "ir").iterdir())
        (tmp / "shards").mkdir()
        for shard in range(args.shards):
            with tarfile.open(tmp / "shards" / f"pairs-{shard}.tar", "w", dereference=True) as archive:
                for name in stems[shard :: args.shards]:
                    archive.add(tmp / "src" / "ir" / name, f"pairs/ir/{name}")
                    archive.add(tmp / "src" / "vi" / name, f"pairs/vi/{name}")
        pairs = len(stems)
        bare = bare_loop(tmp / "src", tmp / "bare", metrics)
        print(f"bare loop: {bare:.2f} pairs/s ({torch.get_num_threads()} torch threads)")
        runs = {}
        for actors in args.actors:
            ray.init(address="local", num_cpus=max(actors, 2), include_dashboard=False, logging_level="ERROR")
            job = FuseJob(
                input=str(tmp / "shards"),
                output=str(tmp / f"out_{actors}.tar"),
                checkpoint=str(WEIGHTS),
                actors=actors,
                cpus_per_actor=max(1, 2 // actors),
                metrics=metrics,
            )
            start = Stopwatch()
            result = batch_fuse(job, progress=False)
            wall = start.elapsed()
            ray.shutdown()
            assert result.fused == pairs, result.failures
            actor_seconds = result.manifest["seconds"]
            runs[f"{actors}_actors"] = {
                "pairs_per_second": pairs / wall,
                "wall_s": wall,
                "batch_fuse_seconds": actor_seconds,
                "ratio_to_bare_loop": pairs / wall / bare,
            }
            print(f"{actors} actor(s): {pairs / wall:.2f} pairs/s = {pairs / wall / bare:.2f} of the bare loop")
    write_result(
        f"batch_fuse_speed_{args.metrics}",
        {
            "pairs": pairs,
            "shards": args.shards,
            "metrics": args.metrics,
            "bare_loop_pairs_per_second": bare,
            "batch": runs,
        },
    )


if __name__ == "__main__":
    main()
