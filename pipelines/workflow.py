"""The durable end-to-end workflow: samples -> prep -> train | tune -> evaluate -> register -> fuse.

Ray Workflows is gone (removed after Ray 2.47), so durability is built here from two rules:

1. **Content-addressed step outputs.** A step's key is a hash of its own settings and the keys
   of the steps it reads; its output lives in ``<storage>/<id>/steps/<step>-<key>/``. A changed
   setting changes that step's key and every key downstream, and nothing upstream.
2. **Completion marker written last.** ``_DONE.json`` (outputs, timings, MLflow run) is written
   atomically after the step's outputs; a step with a marker is skipped, one without is rerun
   from its folder (train and tune resume from their own checkpoints there).

The steps are plain functions run by the driver (``ray job submit`` puts the driver on the
cluster); their work runs on Ray: Ray Data (prep, batch fusion actors), Ray Train (train),
Ray Tune (tune). Each step is an MLflow run nested under one workflow run, so the MLflow UI
shows which shards trained which model and which model version fused which archive.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dwsfusion.files import atomic_write

from .config import TrainConfig, tracking_uri

MARKER = "_DONE.json"
STATE = "workflow.json"


class SamplesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(6, ge=2)
    seed: int = 0


class PrepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patch_size: int = 192
    stride: int = 160
    val_fraction: float = 0.2
    seed: int = 0
    pairs_per_task: int = 64


class RegisterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "dwsfusion"
    alias: str = "champion"
    gate_metrics: list[str] = ["Qabf", "VIF", "SSIM"]
    tolerance: float = 0.0
    eval_source: str | None = None


class FuseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | None = None  # default: the workflow's source pairs
    output: str = "fused"  # folder or archive name inside the step's folder (or an absolute path)
    metrics: list[str] | Literal["all"] = "all"
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0


class WorkflowConfig(BaseModel):
    """One typed config behind ``dwsfusion pipeline``; ``train`` takes every TrainConfig field
    but ``data``/``storage_path``/``name`` (the workflow sets them)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "dwsfusion"
    storage: str = "runs/workflows"  # local or shared (NFS) path
    source: str | None = None  # ir/ + vi/ folder or MSRS root; None: generated sample pairs
    samples: SamplesSettings = SamplesSettings()
    prep: PrepSettings = PrepSettings()
    mode: Literal["train", "tune"] = "train"
    train: dict[str, Any] = Field(default_factory=dict)
    tune: dict[str, Any] = Field(default_factory=dict)  # SweepConfig fields but ``train``
    registry: RegisterSettings = RegisterSettings()
    fuse: FuseSettings = FuseSettings()
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "dwsfusion"

    @model_validator(mode="after")
    def _validate_sections(self) -> WorkflowConfig:
        reserved = {"data", "storage_path", "name"} & set(self.train)
        if reserved:
            raise ValueError(f"train: {', '.join(sorted(reserved))} are set by the workflow")
        self.train_config("<prep output>", "<step folder>")  # field errors surface now
        if self.mode == "tune":
            self.sweep_config(self.train_config("<prep output>", "<step folder>"), "<step folder>")
        return self

    def train_config(self, data: str, storage: str, name: str = "train") -> TrainConfig:
        tree = {
            "mlflow_tracking_uri": self.tracking_uri(),
            "mlflow_experiment": self.mlflow_experiment,
            **self.train,
            "data": data,
            "storage_path": storage,
            "name": name,
        }
        try:
            return TrainConfig.model_validate(tree)
        except ValidationError as exc:
            raise ValueError(_problems("train", exc)) from None

    def sweep_config(self, train: TrainConfig, storage: str, name: str = "sweep"):
        from tune import SweepConfig

        try:
            return SweepConfig.model_validate({**self.tune, "train": train, "storage_path": storage, "name": name})
        except ValidationError as exc:
            raise ValueError(_problems("tune", exc)) from None

    def tracking_uri(self) -> str:
        return tracking_uri(self.mlflow_tracking_uri)


def _problems(section: str, exc: ValidationError) -> str:
    return "; ".join(f"{section}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


# ------------------------------------------------------------------ steps
@dataclass
class Step:
    name: str
    provides: str  # the name later steps read it by ("model" for train or tune)
    settings: dict  # what the key hashes, besides the inputs' keys
    inputs: list[str]
    run: Callable[[WorkflowConfig, Path, dict[str, dict], str], dict]  # -> outputs
    own_runs: bool = False  # opens its own MLflow runs under the workflow run (train, tune)


def _samples(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    from dwsfusion.samples import write_samples

    if config.source:  # prep reads all of it (MSRS: train/ and test/); evaluate and fuse its test pairs
        from dwsfusion.pairs import resolve_source

        ir, vi = resolve_source(config.source)
        source = str(Path(config.source).resolve())
        return {
            "prep_source": source,
            "ir": str(ir.resolve()),
            "vi": str(vi.resolve()),
            "pairs": str(ir.parent.resolve()),
        }
    root = write_samples(out / "pairs", config.samples.count, config.samples.seed)
    return {"prep_source": str(root), "ir": str(root / "ir"), "vi": str(root / "vi"), "pairs": str(root)}


def _prep(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    from data_prep import PrepConfig, run_prep

    prep = config.prep
    result = run_prep(
        PrepConfig(
            source=inputs["samples"]["prep_source"],
            out=str(out / "patches"),
            patch_size=prep.patch_size,
            stride=prep.stride,
            val_fraction=prep.val_fraction,
            seed=prep.seed,
            pairs_per_task=prep.pairs_per_task,
        )
    )
    return {"data": result.out, "run_key": result.run_key, "counts": result.counts, "rejected": result.rejected}


def _run_name(out: Path) -> str:
    """A name unique to this workflow and step key: MLflow finds a resumed run by it."""
    return f"{out.parent.parent.name}.{out.name}"


def _best_generator_file(checkpoint_dir: str, out: Path) -> str:
    """The best-validation generator of a training checkpoint, as a standalone file."""
    from dwsfusion.checkpoints import save_generator
    from dwsfusion.model import Generator, GeneratorConfig

    from .train import load_train_state

    state = load_train_state(checkpoint_dir)
    generator = Generator(GeneratorConfig(**state["generator_config"]))
    best = state["best"]
    generator.load_state_dict(best["generator"] if best["generator"] is not None else state["nets"]["generator"])
    return str(save_generator(generator.eval(), out / "generator.pt", meta={"epoch": best["epoch"]}))


def _train(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    from .train import run_training

    train = config.train_config(inputs["prep"]["data"], str(out / "ray"), _run_name(out))
    resume = (out / "ray" / train.name).exists()  # a killed run continues from its last epoch
    result = run_training(train, resume=resume, parent_run_id=parent)
    generator = _best_generator_file(result.checkpoint, out)
    return {"run_id": result.mlflow_run_id, "generator": generator, "val_loss": result.metrics.get("val_loss")}


def _tune(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    from tune import run_sweep

    train = config.train_config(inputs["prep"]["data"], "<per trial>")
    sweep = config.sweep_config(train, str(out / "ray"), _run_name(out))
    result = run_sweep(sweep, resume=(out / "ray" / sweep.name).exists(), parent_run_id=parent)
    if not result.best_checkpoint:
        raise RuntimeError("the sweep's best trial left no checkpoint")
    generator = _best_generator_file(result.best_checkpoint, out)
    return {
        "run_id": result.best_run_id,
        "generator": generator,
        "best_params": result.best_params,
        "best_val_score": result.best_score,
        "sweep_run_id": result.parent_run_id,
    }


def _evaluate(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    import mlflow

    from dwsfusion.checkpoints import load_generator
    from dwsfusion.evaluate import evaluate_generator, write_csv
    from dwsfusion.pairs import find_pairs

    pairs, _ = find_pairs(inputs["samples"]["ir"], inputs["samples"]["vi"])
    evaluation = evaluate_generator(load_generator(inputs["model"]["generator"]), pairs)
    write_csv(evaluation, out / "metrics.csv")
    means = {k: m for k, (m, _) in evaluation.summary().items() if m == m}
    mlflow.log_metrics({k.replace("-", "_"): v for k, v in means.items()})
    mlflow.log_artifact(str(out / "metrics.csv"))
    return {"metrics_csv": str(out / "metrics.csv"), "means": means, "table": evaluation.table()}


def _register(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    from .registry import GateConfig, register_model

    settings = config.registry
    gate = GateConfig(tuple(settings.gate_metrics), settings.tolerance, settings.eval_source)
    result = register_model(
        run_id=inputs["model"]["run_id"],
        name=settings.name,
        alias=settings.alias,
        gate=gate,
        tracking_uri=config.tracking_uri(),
    )
    return {
        "name": result.name,
        "version": str(result.version),
        "alias": result.alias,
        "reason": result.reason,
        "model_uri": f"models:/{result.name}/{result.version}",
    }


def _fuse(config: WorkflowConfig, out: Path, inputs: dict, parent: str) -> dict:
    from dwsfusion.metrics import METRIC_NAMES

    from .batch_fuse import FuseJob, batch_fuse

    settings = config.fuse
    output = Path(settings.output) if Path(settings.output).is_absolute() else out / settings.output
    job = FuseJob(
        input=settings.input or inputs["samples"]["pairs"],
        output=str(output),
        model=inputs["register"]["model_uri"],
        tracking_uri=config.tracking_uri(),
        actors=settings.actors,
        cpus_per_actor=settings.cpus_per_actor,
        gpus_per_actor=settings.gpus_per_actor,
        metrics=METRIC_NAMES if settings.metrics == "all" else tuple(settings.metrics),
    )
    result = batch_fuse(job)
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


def build_steps(config: WorkflowConfig) -> list[Step]:
    if config.mode == "tune":
        fitting = Step("tune", "model", config.tune | {"train": config.train}, ["prep"], _tune, own_runs=True)
    else:
        fitting = Step("train", "model", config.train, ["prep"], _train, own_runs=True)
    return [
        Step("samples", "samples", {"source": _listing(config.source), **config.samples.model_dump()}, [], _samples),
        Step("prep", "prep", config.prep.model_dump(), ["samples"], _prep),
        fitting,
        Step("evaluate", "evaluate", {}, ["samples", "model"], _evaluate),
        Step("register", "register", config.registry.model_dump(), ["model"], _register),
        Step("fuse", "fuse", config.fuse.model_dump(), ["samples", "register"], _fuse),
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


def workflow_root(config: WorkflowConfig, workflow_id: str) -> Path:
    return Path(config.storage).resolve() / workflow_id


def _workflow_run(config: WorkflowConfig, workflow_id: str) -> str:
    """The workflow's MLflow parent run (found by its id tag, else created)."""
    from .tracking import named_run

    tracking, experiment = config.tracking_uri(), config.mlflow_experiment
    return named_run(
        tracking, experiment, "dwsfusion_workflow_id", workflow_id, True, run_name=f"workflow {workflow_id}"
    )


def run_workflow(config: WorkflowConfig, workflow_id: str | None = None, log=print) -> list[StepState]:
    """Run every step whose marker is missing, in order; returns the final states."""

    workflow_id = workflow_id or config.name
    root = workflow_root(config, workflow_id)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / STATE, json.dumps({"id": workflow_id, "config": config.model_dump()}, indent=2))
    parent = _workflow_run(config, workflow_id)
    outputs: dict[str, dict] = {}
    for state in plan(config, root):
        step = state.step
        if state.done:
            log(f"[{step.name}] done before ({state.folder.name}): skipped")
            outputs[step.provides] = state.record["outputs"]
            continue
        log(f"[{step.name}] running -> {state.folder}")
        state.folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        inputs = {name: outputs[name] for name in step.inputs}
        if step.own_runs:
            result, step_run = step.run(config, state.folder, inputs, parent), None
        else:
            result, step_run = _run_in_mlflow(config, state, inputs, parent)
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


def _run_in_mlflow(config: WorkflowConfig, state: StepState, inputs: dict, parent: str) -> tuple[dict, str]:
    """Run a step inside its own MLflow run, nested under the workflow run."""
    import mlflow

    mlflow.set_tracking_uri(config.tracking_uri())
    experiment = mlflow.get_run(parent).info.experiment_id
    tags = {"mlflow.parentRunId": parent, "dwsfusion_step": state.step.name, "dwsfusion_step_key": state.key}
    with mlflow.start_run(run_name=state.step.name, experiment_id=experiment, tags=tags) as run:
        mlflow.log_params(
            {
                "step_key": state.key,
                "folder": str(state.folder),
                **{f"input.{k}": v for k, v in state.input_keys.items()},
            }
        )
        result = state.step.run(config, state.folder, inputs, parent)
        mlflow.log_dict(result, "outputs.json")
        return result, run.info.run_id


def load_workflow(storage: str, workflow_id: str) -> WorkflowConfig:
    path = Path(storage).resolve() / workflow_id / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no workflow '{workflow_id}' under {storage}")
    return WorkflowConfig.model_validate(json.loads(path.read_text())["config"])
