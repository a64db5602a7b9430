"""Prep throughput vs raw decode throughput on the same files (issue: prep must be I/O- or
decode-bound, >= 80 % of raw decode).

Source: TNO (25) + RoadScene (50) from ../shared/data, each pair linked ``--repeat`` times
under distinct stems so steady-state throughput dominates Ray's fixed start-up costs.
Raw decode: ``cv2.imdecode`` of every file, one process. Prep: ``run_prep`` on a running
local Ray (start-up excluded, checksums and manifest included), 2 CPUs.
Run: python benchmarks/prep_speed.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import ray
from common import SHARED, Stopwatch, link_shared_pairs, write_result

from data_prep import PrepConfig, run_prep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--patch-size", type=int, default=176)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--pairs-per-task", type=int, default=PrepConfig.pairs_per_task)
    args = parser.parse_args()
    if not (SHARED / "data" / "TNO").is_dir():
        raise SystemExit(f"{SHARED}/data not found: this benchmark needs the shared TNO and RoadScene pairs")
    work = Path(tempfile.mkdtemp(prefix="prep-bench-"))
    try:
        files = link_shared_pairs(work / "src", args.repeat)
        source_bytes = sum(os.path.getsize(f) for f in files)

        start = Stopwatch()
        for f in files:
            image = cv2.imdecode(np.fromfile(f, np.uint8), cv2.IMREAD_UNCHANGED)
            assert image is not None
        decode_s = start.elapsed()

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        config = PrepConfig(
            source=str(work / "src"),
            out=str(work / "out"),
            patch_size=args.patch_size,
            stride=args.stride,
            val_fraction=0.1,
            seed=0,
            pairs_per_task=16,
        )
        start = Stopwatch()
        result = run_prep(config, log=lambda *_: None)
        prep_s = start.elapsed()
        ray.shutdown()
        patches = sum(c["patches"] for c in result.counts.values())
        write_result(
            f"prep_speed_{args.pairs_per_task}_pairs_per_task",
            {
                "input": f"TNO 25 + RoadScene 50 pairs x {args.repeat} links = {len(files) // 2} pairs, "
                f"{source_bytes / 1e6:.1f} MB; patch {args.patch_size}, stride {args.stride}, "
                f"{args.pairs_per_task} pairs per task",
                "raw_decode_seconds": decode_s,
                "raw_decode_MB_per_s": source_bytes / 1e6 / decode_s,
                "prep_seconds": prep_s,
                "prep_MB_per_s": source_bytes / 1e6 / prep_s,
                "prep_patches_per_s": patches / prep_s,
                "patches": patches,
                "rejected_pairs": len(result.rejected),
                "prep_vs_raw_decode": decode_s / prep_s,
                "goal_ratio": 0.8,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
