"""Ray Tune over the training of ``pipelines.train`` (no second copy of the loop).

Ray Train V2 runs under Tune as the "Tune integration" page describes: each trial is a
small Tune function (the trial driver) that builds a ``TorchTrainer`` through
``run_training`` with Tune's ``TuneReportCallback``, so every epoch's metrics reach the
scheduler. The trial's workers are Ray Train's own actors (``train.num_workers`` x
``cpus_per_worker`` / GPUs), outside the trial's Tune resources; ``max_concurrent`` bounds
how many trials hold workers at once.

Objective: ``val_score`` = mean of Qabf, VIF and SSIM of the fixed validation patches
(maximised). The validation loss is not used: it weights the very terms being tuned, so it
cannot rank trials with different coefficients. A trial whose losses go non-finite stops
itself, reports ``diverged = 1`` and ``val_score = 0``, and the sweep goes on.

MLflow: one parent run per sweep; each trial's training run is nested under it (params,
per-epoch metrics, fusion grids, its best generator). The parent holds ``trials.csv`` and
``objective_vs_coefficients.png`` and the best trial's config and run id.
"""

from __future__ import annotations

import json
import math
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_prep.ray_session import ensure_ray
from data_prep.storage import location_exists
from dwsfusion.errors import UsageError
from dwsfusion.evaluate import write_rows_csv
from pipelines.config import TrainConfig, TrainSettings, get_dotted, set_dotted
from pipelines.runtime import named_run, store_path
from pipelines.train import load_inputs, run_training

from .plots import objective_vs_coefficients

OBJECTIVE = "val_score"


class Dimension(BaseModel):
    """One search dimension: log-uniform / uniform ranges, or a list of values."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["loguniform", "uniform", "choice", "grid"] = "loguniform"
    low: float | None = None
    high: float | None = None
    values: list[float | int | str | bool] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Dimension:
        if self.type in ("loguniform", "uniform"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.type} needs low < high")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
        elif not self.values:
            raise ValueError(f"{self.type} needs a non-empty 'values' list")
        return self

    def to_tune(self):
        from ray import tune  # Ray: heavy and optional, imported on use

        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "choice":
            return tune.choice(self.values)
        return tune.grid_search(self.values)


def _default_space() -> dict[str, Dimension]:
    return {f"loss.{k}": Dimension(low=0.1, high=10.0) for k in ("dual_ir", "dual_vi", "dual_cross")}


class SweepSettings(BaseModel):
    """How to sweep: the search space (dotted TrainConfig keys) and how trials are scheduled.
    The workflow's ``tune:`` section; ``SweepConfig`` adds the base training config and storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    space: dict[str, Dimension] = Field(default_factory=_default_space)
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(1, ge=1)
    scheduler: Literal["asha", "fifo"] = "asha"
    search_alg: Literal["random", "optuna"] = "random"
    grace_period: int = Field(1, ge=1)  # epochs before ASHA may stop a trial
    reduction_factor: int = Field(2, ge=2)
    trial_cpus: float = Field(0.25, ge=0)  # the trial driver; the workers reserve their own
    points_to_evaluate: list[dict[str, float | int | str | bool]] = []  # trials to run first, e.g. the defaults
    seed: int = 0

    @model_validator(mode="after")
    def _known_keys(self) -> SweepSettings:
        fields = TrainSettings().model_dump()
        for key in self.space:
            try:
                get_dotted(fields, key)
            except KeyError:
                raise ValueError(f"space: '{key}' is not a field of the training settings") from None
        return self


class SweepConfig(SweepSettings):
    """A sweep: its settings, the base training config, and where it is stored."""

    train: TrainConfig
    name: str = "sweep"
    storage_path: str = "runs/tune"  # Tune's experiment storage: under the home when relative, NFS or s3://

    def storage(self) -> str:
        return store_path(self.storage_path, "storage_path")


def apply_overrides(train: dict, params: dict) -> dict:
    """A copy of the training config dict with dotted ``params`` set."""
    tree = json.loads(json.dumps(train))
    for key, value in params.items():
        set_dotted(tree, key, value)
    return tree


def trial_driver(
    params: dict, base: dict, sweep_dir: str, parent_run_id: str, inputs: tuple, progress: bool = True
) -> None:
    """One trial: the shared training loop under Ray Train, metrics reported to Tune. A
    restored sweep re-runs this; Ray Train then resumes the trial's run from its checkpoint."""
    import ray.tune  # Ray: heavy and optional, imported on use
    from ray.tune.integration.ray_train import TuneReportCallback

    trial = ray.tune.get_context().get_trial_id()
    tree = apply_overrides(base, params)
    tree.update(name=f"trial_{trial}", storage_path=posixpath.join(sweep_dir, "trials"))  # Path folds s3://
    config = TrainConfig.model_validate(tree)
    resume = location_exists(posixpath.join(config.storage_path, config.name))  # local or s3://
    run_training(config, resume, parent_run_id, callbacks=[TuneReportCallback()], inputs=inputs, progress=progress)


@dataclass
class SweepResult:
    best_params: dict
    best_config: TrainConfig
    best_score: float
    best_run_id: str | None  # the best trial's MLflow run: `dwsfusion register --run` takes it
    best_checkpoint: str | None
    table: list[dict]
    parent_run_id: str
    path: str


def _parent_run(config: SweepConfig, resume: bool, parent_run_id: str | None) -> str:
    space = {k: v.model_dump(exclude_none=True) for k, v in config.space.items()}
    params = config.model_dump(exclude={"train", "space"})
    params["space"] = json.dumps(space)
    return named_run(
        config.train.tracking_uri(),
        config.train.mlflow_experiment,
        "dwsfusion_sweep_name",
        config.name,
        resume,
        parent_run_id,
        params,
        artifact_location=config.train.mlflow_artifact_location,
    )


def _search(config: SweepConfig):
    points = config.points_to_evaluate or None
    if config.search_alg == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator  # Ray: heavy and optional, imported on use

        # Its own concurrency limit: TuneConfig.max_concurrent_trials does not bind a given generator.
        return BasicVariantGenerator(
            points_to_evaluate=points, max_concurrent=config.max_concurrent, random_state=config.seed
        )
    try:
        from ray.tune.search.optuna import OptunaSearch  # Ray: heavy and optional, imported on use
    except ImportError as exc:  # optuna is an optional extra
        raise UsageError("search_alg 'optuna' needs Optuna: pip install 'dwsfusion[tune]'") from exc
    from ray.tune.search import ConcurrencyLimiter  # Ray: heavy and optional, imported on use

    return ConcurrencyLimiter(OptunaSearch(points_to_evaluate=points, seed=config.seed), config.max_concurrent)


def _scheduler(config: SweepConfig):
    from ray.tune.schedulers import (  # Ray: heavy and optional, imported on use
        ASHAScheduler,
        FIFOScheduler,
    )

    if config.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=config.train.epochs,
        grace_period=min(config.grace_period, config.train.epochs),
        reduction_factor=config.reduction_factor,
    )


def _trial_runs(parent_run_id: str) -> dict[str, str]:
    """Training run name (trial_<id>) -> MLflow run id, for the runs nested under the sweep."""
    import mlflow  # MLflow: heavy and optional, imported on use

    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", output_format="list"
    )
    return {run.data.tags.get("dwsfusion_train_name", ""): run.info.run_id for run in runs}


def _table(results, space: list[str], epochs: int, runs: dict[str, str]) -> list[dict]:
    rows = []
    for result in results:
        history = result.metrics_dataframe
        last = result.metrics or {}
        scores = history[OBJECTIVE].tolist() if history is not None and OBJECTIVE in history else []
        iterations = int(last.get("training_iteration", 0) or 0)
        if result.error:
            status = f"error: {type(result.error).__name__}"
        elif last.get("diverged"):
            status = "diverged"
        elif iterations < epochs:
            status = "stopped early"  # by ASHA (or the run's own early-stopping rule)
        else:
            status = "completed"
        trial = f"trial_{last.get('trial_id', '?')}"
        row = {"trial": trial, "status": status, "epochs": iterations}
        row.update({k: result.config.get(k) for k in space})
        row["best_val_score"] = max(scores) if scores else float("nan")
        row["final_val_score"] = float(last.get(OBJECTIVE, float("nan")))
        row["mlflow_run_id"] = runs.get(trial)
        row["checkpoint"] = last.get("checkpoint_path")
        rows.append(row)
    return rows


def _log_parent(parent_run_id: str, rows: list[dict], space: list[str], best: dict | None) -> None:
    import mlflow  # MLflow: heavy and optional, imported on use

    with mlflow.start_run(run_id=parent_run_id), tempfile.TemporaryDirectory() as folder:
        write_rows_csv(rows, list(rows[0]), Path(folder) / "trials.csv")
        mlflow.log_artifact(str(Path(folder) / "trials.csv"))
        mlflow.log_figure(objective_vs_coefficients(rows, space, OBJECTIVE), "objective_vs_coefficients.png")
        if best:
            mlflow.log_metric(f"best_{OBJECTIVE}", best["best_val_score"])
            mlflow.set_tags({"best_trial": best["trial"], "best_run_id": str(best["mlflow_run_id"])})
            mlflow.log_dict({k: best[k] for k in space}, "best_params.json")


def run_sweep(
    config: SweepConfig, resume: bool = False, parent_run_id: str | None = None, progress: bool = True
) -> SweepResult:
    """Run (or with ``resume``, continue) the sweep; returns the best trial and the table.
    ``parent_run_id`` nests the sweep's MLflow run (a workflow step); ``progress`` prints each
    trial's epoch lines."""
    from ray import tune  # Ray: heavy and optional, imported on use

    storage = config.storage()
    sweep_dir = posixpath.join(storage, config.name)
    if not resume and location_exists(sweep_dir):  # before any work: local folders and s3:// alike
        raise UsageError(f"{sweep_dir}: a sweep with this name exists; pass --resume or choose another name")
    if resume and not tune.Tuner.can_restore(sweep_dir):
        raise UsageError(f"{sweep_dir}: no sweep to resume (run it without --resume first)")
    ensure_ray()
    parent_run_id = _parent_run(config, resume, parent_run_id)
    inputs = load_inputs(config.train.model_copy(update={"materialize": True}))  # once, for every trial
    trainable = tune.with_resources(
        tune.with_parameters(
            trial_driver,
            base=config.train.model_dump(),
            sweep_dir=sweep_dir,
            parent_run_id=parent_run_id,
            inputs=inputs,
            progress=progress,
        ),
        {"CPU": config.trial_cpus},
    )
    if resume:
        tuner = tune.Tuner.restore(sweep_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={key: dim.to_tune() for key, dim in config.space.items()},
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode="max",
                num_samples=config.num_samples,
                scheduler=_scheduler(config),
                search_alg=_search(config),
            ),
            run_config=tune.RunConfig(name=config.name, storage_path=storage),
        )
    grid = tuner.fit()
    space = list(config.space)
    runs = _trial_runs(parent_run_id)
    rows = sorted(_table(grid, space, config.train.epochs, runs), key=lambda r: -_or_minus_inf(r["best_val_score"]))
    best = next((r for r in rows if math.isfinite(r["best_val_score"])), None)
    _log_parent(parent_run_id, rows, space, best)
    if best is None:
        raise RuntimeError(f"sweep {config.name}: no trial reported {OBJECTIVE} (see {sweep_dir})")
    params = {k: best[k] for k in space}
    best_config = TrainConfig.model_validate(apply_overrides(config.train.model_dump(), params))
    return SweepResult(
        params,
        best_config,
        best["best_val_score"],
        best["mlflow_run_id"],
        best["checkpoint"],
        rows,
        parent_run_id,
        sweep_dir,
    )


def _or_minus_inf(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


__all__ = ["OBJECTIVE", "Dimension", "SweepConfig", "SweepResult", "apply_overrides", "run_sweep"]
