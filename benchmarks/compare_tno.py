"""The leaderboard of docs/compare.md: ``dwsfusion compare`` on the 25 TNO pairs of ../shared
with the release (its published images and its weights fused here), our trained generator and
pixel-wise mean and max fusion.

Writes the report to ``--out`` (default runs/compare/tno) and its figures to
``benchmarks/results/compare_tno.json``; ``python benchmarks/report.py`` puts them in
docs/compare.md. Minutes on 2 CPU cores (14 metrics x 5 methods x 25 pairs).

Run: python benchmarks/compare_tno.py --ours runs/reproduce/train/reproduce [--label "reproduce.py, seed 0"]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import REPO, SHARED, Stopwatch, write_result

from pipelines.compare import CompareJob, run_compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", required=True, help="our generator: a checkpoint, a training checkpoint or models:/")
    parser.add_argument("--label", default="our training", help="how the table describes --ours")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "compare" / "tno", help="the report's folder")
    args = parser.parse_args()
    tno, official = SHARED / "data" / "TNO", SHARED / "official"
    if not (tno / "ir").is_dir() or not (official / "tno_fused").is_dir():
        raise SystemExit(f"{tno} and {official / 'tno_fused'} are needed")
    methods = {
        "release images": str(official / "tno_fused"),
        "release weights": str(official / "dwsfusion_official_generator.pth"),
        "ours": args.ours,
        "mean": "mean",
        "max": "max",
    }
    job = CompareJob(
        ir=str(tno / "ir"),
        vi=str(tno / "vi"),
        methods=tuple(f"{name}={source}" for name, source in methods.items()),
        output=str(args.out),
        workers=1,  # the cost table's seconds are timed in this process, on an otherwise idle box
    )
    started = Stopwatch()
    result = run_compare(job)
    summary = json.loads(result.paths["json"].read_text())
    write_result(
        "compare_tno",
        {
            "command": "dwsfusion compare --ir TNO/ir --vi TNO/vi "
            + " ".join(f"--method '{name}={source}'" for name, source in methods.items()),
            "ours": args.label,
            "ours_source": args.ours,
            "wall_s": started.elapsed(),
            **{k: summary[k] for k in ("pairs", "means", "stds", "ranks", "p_values", "best", "costs")},
        },
        echo=False,
    )
    print(result.paths["markdown"].read_text())


if __name__ == "__main__":
    main()
