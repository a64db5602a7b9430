"""``dwsfusion <verb>``: parse arguments, call one function per verb, report errors plainly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoints import CheckpointError
from .color import ImageError
from .pairs import PairError


def _fuse(args: argparse.Namespace) -> int:
    from .fuse import fuse_folder

    report = fuse_folder(args.checkpoint, args.ir, args.vi, args.out, args.device, args.rounding, not args.quiet)
    print(f"fused {len(report.written)} pair(s) into {args.out}")
    for problem in report.failed:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if report.failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_folders, write_csv

    evaluation = evaluate_folders(args.ir, args.vi, args.fused, progress=not args.quiet)
    if args.csv:
        write_csv(evaluation, args.csv)
        print(f"wrote {len(evaluation.rows)} row(s) to {args.csv}")
    print(evaluation.table())
    for problem in evaluation.failed:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if evaluation.failed else 0


def _samples(args: argparse.Namespace) -> int:
    from .samples import write_samples

    out = write_samples(args.out, args.count, args.seed)
    print(f"wrote {args.count} synthetic pair(s) to {out}/ir and {out}/vi")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from .quickstart import run_quickstart
    from .quicktrain import QuickTrainConfig

    result = run_quickstart(
        args.workdir, args.source, args.checkpoint, QuickTrainConfig(steps=args.steps), not args.quiet
    )
    print("\nMean metrics over the pairs (DWSFusion vs. pixel-wise baselines):")
    print(result["table"])
    print(f"\ncheckpoint:  {result['checkpoint']}")
    print(f"fused:       {result['fused_dir']}")
    print(f"metrics CSV: {result['metrics_csv']}")
    return 1 if result["failed"] else 0


def add_core_verbs(verbs: argparse._SubParsersAction) -> None:
    """The verbs of the pure library (no Ray); ``pipelines.cli`` adds the cluster ones and
    may replace a verb (its ``fuse`` also takes registered models and archives)."""
    if "fuse" not in verbs.choices:
        add_fuse_arguments(verbs.add_parser("fuse", help="fuse IR/VIS pairs (paired by file stem) with a checkpoint"))
        verbs.choices["fuse"].set_defaults(run=_fuse)

    p = verbs.add_parser("evaluate", help="metric suite of fused images against their sources")
    p.add_argument("--ir", required=True, type=Path)
    p.add_argument("--vi", required=True, type=Path)
    p.add_argument("--fused", required=True, type=Path)
    p.add_argument("--csv", type=Path, help="write one row per image here")
    p.set_defaults(run=_evaluate)

    p = verbs.add_parser("samples", help="write seeded synthetic IR/VIS pairs")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_samples)

    p = verbs.add_parser("quickstart", help="samples -> short training -> fuse -> metric table")
    p.add_argument("--workdir", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--source", type=Path, help="a folder with ir/ and vi/ (default: generated samples)")
    p.add_argument("--checkpoint", type=Path, help="skip training and fuse with this checkpoint")
    p.add_argument("--steps", type=int, default=40, help="training steps when no checkpoint is given")
    p.set_defaults(run=_quickstart)


def add_fuse_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The folder form of ``fuse``: --checkpoint, --ir, --vi, --out (no Ray)."""
    p.add_argument("--checkpoint", required=required, type=Path, help="our checkpoint or the authors' .pth")
    p.add_argument("--ir", required=required, type=Path, help="folder of infrared images")
    p.add_argument("--vi", required=required, type=Path, help="folder of visible images (same stems)")
    p.add_argument("--out", required=required, type=Path, help="folder for <stem>.png")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--rounding",
        choices=("truncate", "round"),
        default="truncate",
        help="float -> integer pixels: the release truncates (default), or round to nearest",
    )


def build_parser(extra_verbs=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dwsfusion", description="DWSFusion infrared-visible image fusion")
    verbs = parser.add_subparsers(dest="verb", required=True)
    if extra_verbs is not None:
        extra_verbs(verbs)
    add_core_verbs(verbs)
    for sub in verbs.choices.values():
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


# ConfigError is a ValueError
USER_ERRORS = (PairError, ImageError, CheckpointError, ValueError, FileNotFoundError, FileExistsError)


def main(argv: list[str] | None = None, extra_verbs=None) -> int:
    args = build_parser(extra_verbs).parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
