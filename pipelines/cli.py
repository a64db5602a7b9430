"""The ``dwsfusion`` console script: the library's verbs plus the Ray-backed stages."""

from __future__ import annotations

import argparse
import sys

from dwsfusion.cli import main as core_main

from .config import tracking_uri


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


def _fuse(args: argparse.Namespace) -> int:
    """Folder form (--ir/--vi/--out, no Ray) or batch form (--input/--output, Ray Data)."""
    if args.input is None and args.output is None:
        missing = [f"--{k}" for k in ("checkpoint", "ir", "vi", "out") if getattr(args, k) is None]
        if missing or args.model:
            raise ValueError("give --input SRC --output DST (batch), or --checkpoint --ir --vi --out (folders)")
        from dwsfusion.cli import _fuse as fuse_folders

        return fuse_folders(args)
    if args.input is None or args.output is None or args.ir or args.vi or args.out:
        raise ValueError("batch fusion takes --input SRC and --output DST (not --ir/--vi/--out)")
    from dwsfusion.metrics import METRIC_NAMES
    from dwsfusion.tiling import TileConfig

    from .archives import ArchiveLimits
    from .batch_fuse import FuseJob, batch_fuse

    metrics = (
        () if args.metrics == "none" else METRIC_NAMES if args.metrics == "all" else tuple(args.metrics.split(","))
    )
    unknown = sorted(set(metrics) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"--metrics: unknown {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)}")
    job = FuseJob(
        input=args.input,
        output=args.output,
        model=args.model,
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        tracking_uri=tracking_uri(args.tracking_uri) if args.model else None,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        metrics=metrics,
        rounding=args.rounding,
        tiles=TileConfig(args.tile_size, args.tile_overlap, args.tile_above),
        limits=ArchiveLimits(args.max_members, args.max_member_mb << 20, args.max_total_gb << 30, args.max_pixels),
    )
    result = batch_fuse(job, progress=not args.quiet)
    counts = result.manifest.get("counts", {})
    print(
        f"fused {result.fused} pair(s) now, {result.skipped} already done; {counts.get('pairs')} pair(s) in {job.input}"
    )
    for problem in result.failures:
        print(f"refused/failed: {problem}", file=sys.stderr)
    print(f"output:   {result.output} (metrics.csv and manifest.json inside)")
    return 1 if counts.get("failed") else 0


def _register(args: argparse.Namespace) -> int:
    from .registry import GateConfig, register_model

    gate = GateConfig(tuple(args.gate_metrics.split(",")), args.tolerance, args.eval_source)
    result = register_model(
        run_id=args.run,
        checkpoint=args.checkpoint,
        name=args.name,
        alias=args.alias,
        gate=gate,
        tracking_uri=tracking_uri(args.tracking_uri),
    )
    figures = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    print(f"registered {result.name} version {result.version} -> @{result.alias}: {result.reason}")
    print(f"metrics on the evaluation set: {figures}")
    print(f"use it:  dwsfusion fuse --model models:/{result.name}@{result.alias} --input SRC --output DST")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from tune import SweepConfig, run_sweep

    from .config import load_config

    overrides = list(args.overrides)
    for flag, key in (
        ("num_samples", "num_samples"),
        ("max_concurrent", "max_concurrent"),
        ("scheduler", "scheduler"),
        ("search_alg", "search_alg"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    config = load_config(SweepConfig, args.config, overrides)
    result = run_sweep(config, resume=args.resume)
    columns = ["trial", "status", "epochs", *config.space, "best_val_score"]
    print("\n" + "  ".join(f"{c:>16}" for c in columns))
    for row in result.table:
        print("  ".join(f"{_cell(row[c]):>16}" for c in columns))
    print(f"\nbest val_score {result.best_score:.4f} with {result.best_params}")
    print(f"best trial's MLflow run: {result.best_run_id}  (register: dwsfusion register --run {result.best_run_id})")
    print(f"best trial's checkpoint: {result.best_checkpoint}")
    print(f"sweep: {result.path}; MLflow parent run {result.parent_run_id} ({config.train.tracking_uri()})")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from .config import load_config
    from .workflow import WorkflowConfig, load_workflow, plan, run_workflow, workflow_root

    if args.action == "run":
        config = load_config(WorkflowConfig, args.config, args.overrides)
        workflow_id = args.workflow_id or config.name
    else:
        workflow_id = args.workflow_id
        config = load_workflow(args.storage, workflow_id)
    root = workflow_root(config, workflow_id)
    if args.action == "status":
        for state in plan(config, root):
            seconds = state.record.get("seconds")
            when = f"{seconds:8.1f} s" if seconds is not None else "        -"
            print(f"{state.step.name:<9} {'done' if state.done else 'pending':<8} {when}  {state.folder}")
        return 0
    states = run_workflow(config, workflow_id)
    outputs = {s.step.provides: s.record.get("outputs", {}) for s in states}
    print(f"\nworkflow {workflow_id}: {root}")
    print(outputs["evaluate"].get("table", ""))
    print(f"\nfused images:  {outputs['fuse'].get('output')}  (metrics.csv, manifest.json beside them)")
    print(f"metric table:  {outputs['evaluate'].get('metrics_csv')}")
    print(
        f"model:         {outputs['register'].get('model_uri')} (@{outputs['register'].get('alias')}: "
        f"{outputs['register'].get('reason')})"
    )
    print(f"MLflow UI:     mlflow ui --backend-store-uri {config.tracking_uri()}")
    print(f"status:        dwsfusion pipeline status {workflow_id} --storage {config.storage}")
    return 0


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def add_pipeline_verbs(verbs: argparse._SubParsersAction) -> None:
    from data_prep.config import DEFAULT_PATCH, DEFAULT_STRIDE
    from dwsfusion.cli import add_fuse_arguments
    from dwsfusion.color import MAX_PIXELS
    from dwsfusion.tiling import TileConfig

    p = verbs.add_parser(
        "fuse",
        help="fuse pairs: folders with a checkpoint, or a folder/archive with a registered model on Ray",
        description="Folder form: --checkpoint C --ir DIR --vi DIR --out DIR (one process). Batch form: "
        "(--model models:/NAME@ALIAS | --checkpoint C) --input SRC --output DST, where SRC is a folder with "
        "ir/ + vi/ or a .tar/.tar.gz/.zip (local or URI) and DST a folder or archive (Ray Data actors).",
    )
    add_fuse_arguments(p, required=False)
    p.add_argument("--model", help="MLflow model URI, e.g. models:/dwsfusion@champion")
    p.add_argument("--input", help="batch: folder with ir/ + vi/, or .tar / .tar.gz / .zip (path or URI)")
    p.add_argument("--output", help="batch: folder, or .tar / .tar.gz / .zip")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.add_argument("--actors", type=int, help="model replicas (default: one per GPU, else per CPU)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--metrics", default="all", help="all, none, or a comma list (e.g. Qabf,VIF,SSIM)")
    tiles = TileConfig()
    p.add_argument("--tile-size", type=int, default=tiles.size, help="tile side for large images")
    p.add_argument("--tile-overlap", type=int, default=tiles.overlap, help="blended band between tiles")
    p.add_argument("--tile-above", type=int, default=tiles.above_pixels, help="tile images with more pixels")
    p.add_argument("--max-members", type=int, default=100_000, help="archive: most members read")
    p.add_argument("--max-member-mb", type=int, default=512, help="archive: largest member (MiB)")
    p.add_argument("--max-total-gb", type=int, default=64, help="archive: most bytes extracted (GiB)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest image (pixels, from its header)")
    p.set_defaults(run=_fuse)

    p = verbs.add_parser("tune", help="Ray Tune sweep of the loss coefficients (ASHA, MLflow nested runs)")
    p.add_argument("--config", help="YAML file (tune.SweepConfig: train, space, num_samples, ...)")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--scheduler", choices=("asha", "fifo"))
    p.add_argument("--search-alg", choices=("random", "optuna"))
    p.add_argument("--resume", action="store_true", help="continue the sweep of this name (Tuner.restore)")
    p.add_argument("overrides", nargs="*", help="key=value, dotted (e.g. train.epochs=3 space.lr_g.low=1e-4)")
    p.set_defaults(run=_tune)

    p = verbs.add_parser("pipeline", help="the durable workflow: prep -> train|tune -> evaluate -> register -> fuse")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("run", help="run every step not done yet (a second run with the same config does nothing)")
    a.add_argument("--config", help="YAML file (pipelines.workflow.WorkflowConfig)")
    a.add_argument("--workflow-id", help="the workflow's id (default: the config's name)")
    a.add_argument("overrides", nargs="*", help="key=value, dotted (e.g. source=DIR train.epochs=2)")
    for action, text in (
        ("resume", "rerun the steps not done, with the workflow's saved config"),
        ("status", "each step's state, time and output folder"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("workflow_id")
        a.add_argument("--storage", default="runs/workflows", help="the workflows' storage folder")
    p.set_defaults(run=_pipeline)

    p = verbs.add_parser("register", help="register a run's generator or a checkpoint in MLflow (promotion gate)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="MLflow run id of a training run")
    source.add_argument("--checkpoint", help="checkpoint file: ours or the authors' release")
    p.add_argument("--name", default="dwsfusion", help="registered model name")
    p.add_argument("--alias", default="champion", help="champion (through the gate), challenger, or any alias")
    p.add_argument("--gate-metrics", default="Qabf,VIF,SSIM", help="metrics the champion gate compares")
    p.add_argument("--tolerance", type=float, default=0.0, help="relative slack of the gate (0.01 = 1 %%)")
    p.add_argument("--eval-source", help="evaluation folder with ir/ + vi/ (default: seeded sample pairs)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.set_defaults(run=_register)

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
