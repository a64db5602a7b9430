"""The durable end-to-end workflow: samples -> prep -> train | tune -> evaluate -> register -> fuse.

Ray Workflows is gone (removed after Ray 2.47), so durability is built here from three rules:

1. **Content-addressed step outputs.** A step's key is a hash of its own settings and the keys
   of the steps it reads; its output lives in ``<storage>/<id>/steps/<step>-<key>/``. A changed
   setting changes that step's key and every key downstream, and nothing upstream.
2. **Completion marker written last.** ``_DONE.json`` (outputs, timings, MLflow run) is written
   atomically after the step's outputs; a step with a marker is skipped, one without is rerun
   from its folder (train and tune resume from their own checkpoints there).
3. **One run per workflow id.** ``run`` and ``resume`` hold the id's lock (``pipelines.lock``):
   a second run of the same id stops at once and names the holder.

The steps are plain functions run by the driver (``ray job submit`` puts the driver on the
cluster); their work runs on Ray: Ray Data (prep, batch fusion actors), Ray Train (train),
Ray Tune (tune). Each step is an MLflow run nested under one workflow run, so the MLflow UI
shows which shards trained which model and which model version fused which archive.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from data_prep import PrepConfig, run_prep
from data_prep.config import PrepSettings
from data_prep.ray_session import ensure_ray
from data_prep.storage import is_uri, location_exists
from dwsfusion.checkpoints import load_generator, save_generator
from dwsfusion.evaluate import evaluate_folders, evaluate_generator, write_csv
from dwsfusion.files import atomic_write
from dwsfusion.model import Generator, GeneratorConfig
from dwsfusion.pairs import find_pairs, resolve_source
from dwsfusion.quickstart import comparison_table, write_baselines
from dwsfusion.samples import write_samples
from tune import run_sweep
from tune.sweep import SweepConfig, SweepSettings

from .batch.run import FuseJob, batch_fuse
from .config import (
    FuseSettings,
    RegisterSettings,
    SamplesSettings,
    TrainConfig,
    TrainSettings,
    fuse_output,
    validate,
)
from .lock import WorkflowLock
from .runtime import named_run, store_path, tracking_uri, use_tracking
from .train import load_train_state, run_training

MARKER = "_DONE.json"
STATE = "workflow.json"


class WorkflowFuse(FuseSettings):
    input: str | None = None  # default: the workflow's source pairs
    output: str = "fused"  # folder or archive inside the step's folder, an absolute path, or an s3:// prefix

    @field_validator("output")
    @classmethod
    def _an_output(cls, value: str) -> str:
        return fuse_output(value)  # refused when the config loads, not after training


class WorkflowConfig(BaseModel):
    """One typed config behind ``dwsfusion pipeline``: every section is its stage's settings
    model (the same the CLI verbs use); the workflow supplies the data, storage and names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "dwsfusion"
    storage: str = "runs/workflows"  # under the home when relative; local or shared (NFS)
    # Where prep's shards and the training / sweep checkpoints go: an object store (s3://bucket/
    # prefix), or a folder every node sees; default: the step's own folder under ``storage``.
    # The workflow's own state (completion markers, lock, config) stays under ``storage``.
    data_store: str | None = None
    source: str | None = None  # ir/ + vi/ folder or MSRS root; None: generated sample pairs
    samples: SamplesSettings = SamplesSettings()
    prep: PrepSettings = PrepSettings()
    mode: Literal["train", "tune"] = "train"
    train: TrainSettings = TrainSettings()
    tune: SweepSettings = Field(default_factory=SweepSettings)
    registry: RegisterSettings = RegisterSettings()
    fuse: WorkflowFuse = WorkflowFuse()
    mlflow_tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else the home's runs/mlflow.db
    mlflow_experiment: str = "dwsfusion"
    # New experiments' artifacts; default: runs/mlartifacts beside a SQLite store (runtime.artifact_root)
    mlflow_artifact_location: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _workflow_sets_these(cls, tree):
        """A clearer word than 'extra input' for the run fields the workflow fills in."""
        for section, fields in (
            ("train", ("data", "storage_path", "name")),
            ("tune", ("train", "storage_path", "name")),
        ):
            given = sorted(set(fields) & set((tree or {}).get(section) or {}))
            if given:
                raise ValueError(f"{section}: {', '.join(given)} are set by the workflow")
        return tree

    def train_config(self, data: str, storage: str, name: str = "train") -> TrainConfig:
        run = {"data": data, "storage_path": storage, "name": name, "mlflow_experiment": self.mlflow_experiment}
        run["mlflow_artifact_location"] = self.mlflow_artifact_location
        return validate(TrainConfig, {**self.train.model_dump(), **run, "mlflow_tracking_uri": self.tracking_uri()})

    def sweep_config(self, train: TrainConfig, storage: str, name: str = "sweep") -> SweepConfig:
        return validate(SweepConfig, {**self.tune.model_dump(), "train": train, "storage_path": storage, "name": name})

    def tracking_uri(self) -> str:
        return tracking_uri(self.mlflow_tracking_uri)

    def root(self, workflow_id: str) -> Path:
        """The workflow's folder: ``<storage>/<id>``, absolute."""
        return Path(store_path(self.storage, "storage")) / workflow_id

    def data_location(self, step_folder: Path, what: str) -> str:
        """Where a step keeps its bulky data ``what`` (shards, checkpoints): inside its folder, or
        under ``data_store`` at ``<id>/<step>-<key>/<what>`` (a URI stays a URI)."""
        if self.data_store is None:
            return str(step_folder / what)
        workflow_id = step_folder.parent.parent.name  # <storage>/<id>/steps/<step>-<key>
        return posixpath.join(store_path(self.data_store, "data_store"), workflow_id, step_folder.name, what)


# ------------------------------------------------------------------ steps
@dataclass
class StepContext:
    """What a step function gets: the config, its folder, its inputs' outputs, the workflow's
    MLflow run, and whether to show progress."""

    config: WorkflowConfig
    out: Path
    inputs: dict[str, dict]
    parent_run: str
    progress: bool = True


@dataclass
class Step:
    name: str
    provides: str  # the name later steps read it by ("model" for train or tune)
    settings: dict  # what the key hashes, besides the inputs' keys
    inputs: list[str]
    run: Callable[[StepContext], dict]  # -> outputs
    own_runs: bool = False  # opens its own MLflow runs under the workflow run (train, tune)


def _samples(ctx: StepContext) -> dict:
    config = ctx.config
    if config.source:  # prep reads all of it (MSRS: train/ and test/); evaluate and fuse its test pairs
        ir, vi = resolve_source(config.source)
        source = str(Path(config.source).resolve())
        return {
            "prep_source": source,
            "ir": str(ir.resolve()),
            "vi": str(vi.resolve()),
            "pairs": str(ir.parent.resolve()),
        }
    root = write_samples(ctx.out / "pairs", config.samples.count, config.samples.seed)
    return {"prep_source": str(root), "ir": str(root / "ir"), "vi": str(root / "vi"), "pairs": str(root)}


def _prep(ctx: StepContext) -> dict:
    source, out = ctx.inputs["samples"]["prep_source"], ctx.config.data_location(ctx.out, "patches")
    result = run_prep(PrepConfig(**ctx.config.prep.model_dump(), source=source, out=out))
    return {"data": result.out, "run_key": result.run_key, "counts": result.counts, "rejected": result.rejected}


def _run_name(out: Path) -> str:
    """A name unique to this workflow and step key: MLflow finds a resumed run by it."""
    return f"{out.parent.parent.name}.{out.name}"


def _best_generator_file(checkpoint_dir: str, out: Path) -> str:
    """The best-validation generator of a training checkpoint, as a standalone file."""
    state = load_train_state(checkpoint_dir)
    generator = Generator(GeneratorConfig(**state["generator_config"]))
    best = state["best"]
    generator.load_state_dict(best["generator"] if best["generator"] is not None else state["nets"]["generator"])
    return str(save_generator(generator.eval(), out / "generator.pt", meta={"epoch": best["epoch"]}))


def _train(ctx: StepContext) -> dict:
    storage = ctx.config.data_location(ctx.out, "ray")
    train = ctx.config.train_config(ctx.inputs["prep"]["data"], storage, _run_name(ctx.out))
    resume = location_exists(posixpath.join(storage, train.name))  # a killed run continues from its last epoch
    result = run_training(train, resume=resume, parent_run_id=ctx.parent_run, progress=ctx.progress)
    generator = _best_generator_file(result.checkpoint, ctx.out)
    return {"run_id": result.mlflow_run_id, "generator": generator, "val_loss": result.metrics.get("val_loss")}


def _tune(ctx: StepContext) -> dict:
    train = ctx.config.train_config(ctx.inputs["prep"]["data"], "<per trial>")
    storage = ctx.config.data_location(ctx.out, "ray")
    sweep = ctx.config.sweep_config(train, storage, _run_name(ctx.out))
    resume = location_exists(posixpath.join(storage, sweep.name))
    result = run_sweep(sweep, resume=resume, parent_run_id=ctx.parent_run, progress=ctx.progress)
    if not result.best_checkpoint:
        raise RuntimeError("the sweep's best trial left no checkpoint")
    return {
        "run_id": result.best_run_id,
        "generator": _best_generator_file(result.best_checkpoint, ctx.out),
        "best_params": result.best_params,
        "best_val_score": result.best_score,
        "sweep_run_id": result.parent_run_id,
    }


def _evaluate(ctx: StepContext) -> dict:
    """The best generator on the source pairs, beside the generator it started from (what the
    training bought) and pixel-wise mean and max fusion of them."""
    import mlflow  # MLflow: heavy and optional, imported on use

    ir, vi = ctx.inputs["samples"]["ir"], ctx.inputs["samples"]["vi"]
    pairs, _ = find_pairs(ir, vi)
    evaluation = evaluate_generator(load_generator(ctx.inputs["model"]["generator"]), pairs, progress=ctx.progress)
    start = evaluate_generator(ctx.config.train.start_networks().generator.eval(), pairs, progress=False)
    csv_path = write_csv(evaluation, ctx.out / "metrics.csv")
    baselines = {
        name: evaluate_folders(ir, vi, folder, progress=False)
        for name, folder in write_baselines(pairs, ctx.out / "baselines").items()
    }
    means = {k: m for k, (m, _) in evaluation.summary().items() if m == m}
    mlflow.log_metrics({k.replace("-", "_"): v for k, v in means.items()})
    for name, baseline in baselines.items():
        mlflow.log_metrics(
            {f"{name}_fusion_{k.replace('-', '_')}": m for k, (m, _) in baseline.summary().items() if m == m}
        )
    mlflow.log_metrics({f"start_{k.replace('-', '_')}": m for k, (m, _) in start.summary().items() if m == m})
    mlflow.log_artifact(str(csv_path))
    columns = {"dwsfusion": evaluation, "start": start, **{f"{k} fusion": v for k, v in baselines.items()}}
    start_means = {k: m for k, (m, _) in start.summary().items() if m == m}
    bought = "  ".join(f"{k} {means[k] - start_means[k]:+.4f}" for k in ("VIF", "Qabf", "SSIM"))
    table = comparison_table(columns) + f"\ntraining bought (dwsfusion - start): {bought}"
    return {"metrics_csv": str(csv_path), "means": means, "start_means": start_means, "table": table}


def _register(ctx: StepContext) -> dict:
    from .registry import register_model  # imports MLflow: only where the step runs

    config = ctx.config
    result = register_model(
        run_id=ctx.inputs["model"]["run_id"],
        settings=config.registry,
        tracking_uri=config.tracking_uri(),
        artifact_location=config.mlflow_artifact_location,
    )
    return {
        "name": result.name,
        "version": str(result.version),
        "alias": result.alias,
        "reason": result.reason,
        "model_uri": f"models:/{result.name}/{result.version}",
    }


def _fuse(ctx: StepContext) -> dict:
    settings = ctx.config.fuse
    given = settings.output
    output = given if is_uri(given) else str(Path(given) if Path(given).is_absolute() else ctx.out / given)
    job = FuseJob(
        **settings.model_dump(exclude={"input", "output"}),
        input=settings.input or ctx.inputs["samples"]["pairs"],
        output=output,
        model=ctx.inputs["register"]["model_uri"],
        tracking_uri=ctx.config.tracking_uri(),
    )
    result = batch_fuse(job, progress=ctx.progress)
    return {"output": str(output), "counts": result.manifest["counts"], "failures": result.failures}


def _listing(source: str | None) -> str | None:
    """The source folder's identity for the step key: its path and a digest of every file's
    relative name, size and mtime (so changed data reruns prep and what follows)."""
    if source is None:
        return None
    root = Path(source).resolve()
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{root} {digest.hexdigest()[:16]}"


def _data_store(config: WorkflowConfig) -> dict:
    return {"data_store": config.data_store} if config.data_store else {}


def build_steps(config: WorkflowConfig) -> list[Step]:
    train = config.train.model_dump(mode="json")
    if config.mode == "tune":
        tune = config.tune.model_dump(mode="json") | {"train": train}
        fitting = Step("tune", "model", tune, ["prep"], _tune, own_runs=True)
    else:
        fitting = Step("train", "model", train, ["prep"], _train, own_runs=True)
    return [
        Step("samples", "samples", {"source": _listing(config.source), **config.samples.model_dump()}, [], _samples),
        # A data store moves prep's shards and, through prep's key, everything downstream (only
        # hashed when set: the keys of workflows without one stay as they were).
        Step("prep", "prep", config.prep.model_dump(mode="json") | _data_store(config), ["samples"], _prep),
        fitting,
        Step("evaluate", "evaluate", {}, ["samples", "model"], _evaluate),
        Step("register", "register", config.registry.model_dump(mode="json"), ["model"], _register),
        Step("fuse", "fuse", config.fuse.model_dump(mode="json"), ["samples", "register"], _fuse),
    ]


# ------------------------------------------------------------------ the engine
def step_key(step: Step, input_keys: list[str]) -> str:
    payload = json.dumps({"step": step.name, "settings": step.settings, "inputs": input_keys}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class StepState:
    step: Step
    key: str
    input_keys: dict[str, str]
    folder: Path
    done: bool
    record: dict  # the marker's content when done


def plan(config: WorkflowConfig, root: Path) -> list[StepState]:
    """Every step's key, folder and state, without running anything."""
    keys: dict[str, str] = {}
    states = []
    for step in build_steps(config):
        input_keys = {name: keys[name] for name in step.inputs}
        key = step_key(step, list(input_keys.values()))
        keys[step.provides] = key
        folder = root / "steps" / f"{step.name}-{key}"
        marker = folder / MARKER
        record = json.loads(marker.read_text()) if marker.is_file() else {}
        states.append(StepState(step, key, input_keys, folder, marker.is_file(), record))
    return states


def _workflow_run(config: WorkflowConfig, workflow_id: str) -> str:
    """The workflow's MLflow parent run (found by its id tag, else created)."""
    tracking, experiment = config.tracking_uri(), config.mlflow_experiment
    return named_run(
        tracking,
        experiment,
        "dwsfusion_workflow_id",
        workflow_id,
        True,
        run_name=f"workflow {workflow_id}",
        artifact_location=config.mlflow_artifact_location,
    )


def run_workflow(
    config: WorkflowConfig, workflow_id: str | None = None, log=print, progress: bool = True
) -> list[StepState]:
    """Run every step whose marker is missing, in order, holding the workflow's lock (a second
    run of the same id stops at once, naming the holder); returns the final states."""
    workflow_id = workflow_id or config.name
    root = config.root(workflow_id)
    with WorkflowLock(root, workflow_id):
        atomic_write(root / STATE, json.dumps({"id": workflow_id, "config": config.model_dump(mode="json")}, indent=2))
        parent = _workflow_run(config, workflow_id)
        outputs: dict[str, dict] = {}
        for state in plan(config, root):
            step = state.step
            if state.done:
                log(f"[{step.name}] done before ({state.folder.name}): skipped")
                outputs[step.provides] = state.record["outputs"]
                continue
            # One Ray session for every step, started when one has work: logical CPUs for the
            # training workers and Ray Data's reads beside them.
            ensure_ray(config.train.num_workers * config.train.cpus_per_worker + 2)
            log(f"[{step.name}] running -> {state.folder}")
            state.folder.mkdir(parents=True, exist_ok=True)
            started = time.time()
            inputs = {name: outputs[name] for name in step.inputs}
            ctx = StepContext(config, state.folder, inputs, parent, progress)
            if step.own_runs:
                result, step_run = step.run(ctx), None
            else:
                result, step_run = _run_in_mlflow(ctx, state)
            record = {
                "step": step.name,
                "key": state.key,
                "inputs": state.input_keys,
                "outputs": result,
                "started": started,
                "seconds": time.time() - started,
                "mlflow_run_id": step_run,
            }
            atomic_write(state.folder / MARKER, json.dumps(record, indent=2, default=str))  # written last
            outputs[step.provides] = result
            log(f"[{step.name}] finished in {record['seconds']:.1f} s")
        return plan(config, root)


def _run_in_mlflow(ctx: StepContext, state: StepState) -> tuple[dict, str]:
    """Run a step inside its own MLflow run, nested under the workflow run."""
    import mlflow  # MLflow: heavy and optional, imported on use

    use_tracking(ctx.config.tracking_uri())
    experiment = mlflow.get_run(ctx.parent_run).info.experiment_id
    tags = {"mlflow.parentRunId": ctx.parent_run, "dwsfusion_step": state.step.name, "dwsfusion_step_key": state.key}
    with mlflow.start_run(run_name=state.step.name, experiment_id=experiment, tags=tags) as run:
        mlflow.log_params(
            {
                "step_key": state.key,
                "folder": str(state.folder),
                **{f"input.{k}": v for k, v in state.input_keys.items()},
            }
        )
        result = state.step.run(ctx)
        mlflow.log_dict(result, "outputs.json")
        return result, run.info.run_id


def load_workflow(storage: str, workflow_id: str) -> WorkflowConfig:
    """The config a workflow last ran with (``<storage>/<id>/workflow.json``)."""
    path = Path(store_path(storage, "--storage")) / workflow_id / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no workflow '{workflow_id}' under {storage}")
    return validate(WorkflowConfig, json.loads(path.read_text())["config"], where=f"{path}: ")
