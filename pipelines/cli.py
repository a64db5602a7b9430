"""The ``dwsfusion`` console script: the library's verbs plus the Ray-backed stages."""

from __future__ import annotations

import argparse
import sys

from dwsfusion.cli import main as core_main


def _prep(args: argparse.Namespace) -> int:
    from data_prep import PrepConfig, run_prep

    config = PrepConfig(
        source=str(args.source),
        out=args.out,
        patch_size=args.patch_size,
        stride=args.stride,
        val_fraction=args.val_fraction,
        seed=args.seed,
        pairs_per_task=args.pairs_per_task,
    )
    run_prep(config)  # rejected pairs are printed and listed in the manifest; they do not fail the run
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import TrainConfig, load_config
    from .train import run_training

    config = load_config(TrainConfig, args.config, args.overrides)
    result = run_training(config, resume=args.resume)
    metrics = result.metrics
    print(f"finished at epoch {metrics.get('epoch')}: val_loss {metrics.get('val_loss', float('nan')):.4f}")
    print(f"last checkpoint: {result.checkpoint}")
    print(f"MLflow run:      {result.mlflow_run_id} ({config.tracking_uri()})")
    print(f"MLflow UI:       mlflow ui --backend-store-uri {config.tracking_uri()}")
    return 0


def add_pipeline_verbs(verbs: argparse._SubParsersAction) -> None:
    from data_prep.config import DEFAULT_PATCH, DEFAULT_STRIDE

    p = verbs.add_parser("prep", help="extract training patches into Parquet shards (Ray Data)")
    p.add_argument(
        "--source", required=True, help="MSRS root (train/ir, train/vi[, test/...]) or a folder with ir/ + vi/"
    )
    p.add_argument("--out", required=True, help="output folder or pyarrow URI (s3://, gs://, file://)")
    p.add_argument(
        "--patch-size", type=int, default=DEFAULT_PATCH, help=f"square patch side, > 160 (default {DEFAULT_PATCH})"
    )
    p.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help=f"grid step (default {DEFAULT_STRIDE})")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of source images for validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--pairs-per-task", type=int, default=64, help="pairs per Ray task and per shard (default 64)")
    p.set_defaults(run=_prep)

    p = verbs.add_parser("train", help="Ray Train data-parallel training of G, D_ir, D_vi (MLflow tracked)")
    p.add_argument("--config", help="YAML file (pipelines.config.TrainConfig); keys may also be given as overrides")
    p.add_argument("--resume", action="store_true", help="continue the run of this name from its last checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value (dotted for sections, e.g. loss.dual_ir=0.5)")
    p.set_defaults(run=_train)


def main(argv: list[str] | None = None) -> int:
    return core_main(argv, extra_verbs=add_pipeline_verbs)


if __name__ == "__main__":
    sys.exit(main())
