"""Typed configuration of the pipeline stages, loadable from YAML with ``key=value``
overrides. Validation errors name the field. Values are parsed as YAML scalars, never
evaluated."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; names the field."""


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: float = 10.0
    adversarial: float = 0.1
    dual_ir: float = Field(1.0, ge=0)
    dual_vi: float = Field(1.0, ge=0)
    dual_cross: float = Field(1.0, ge=0)
    gradient_penalty: float = 10.0


class TrainConfig(BaseModel):
    """Training defaults follow the release: Adam (G) / RMSprop (D), lr 0.01, batch 16,
    ReduceLROnPlateau (patience 2, factor 0.1), early stopping after 5 bad epochs."""

    model_config = ConfigDict(extra="forbid")
    data: str  # a prep output folder or URI (its manifest.json lists the shards)
    storage_path: str = "runs/train"  # Ray Train storage: local path, NFS or s3://...
    name: str = "dwsfusion"  # run name; the same name resumes
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=-1)  # worker-group restarts from the last checkpoint
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)  # global: split evenly across workers
    max_steps_per_epoch: int | None = Field(None, ge=1)
    lr_g: float = Field(0.01, gt=0)
    lr_d: float = Field(0.01, gt=0)
    plateau_patience: int = Field(2, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    early_stop_patience: int = Field(5, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    amp: Literal["off", "bf16"] = "off"
    channels_last: bool = False
    seed: int = 0
    channel_min_hidden: int = Field(0, ge=0)
    loss: LossConfig = LossConfig()
    val_images: int = Field(4, ge=1)  # fixed validation patches for metrics and the grid
    shuffle_buffer: int = Field(256, ge=0)
    materialize: bool = False  # hold the train patches in Ray's object store after one read

    mlflow_tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else runs/mlflow.db
    mlflow_experiment: str = "dwsfusion"

    def per_worker_batch(self) -> int:
        if self.batch_size % self.num_workers:
            raise ConfigError(f"batch_size={self.batch_size} is not divisible by num_workers={self.num_workers}")
        return self.batch_size // self.num_workers

    def tracking_uri(self) -> str:
        return tracking_uri(self.mlflow_tracking_uri)


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow store: ``explicit``, else $MLFLOW_TRACKING_URI, else runs/mlflow.db (SQLite)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    path = Path("runs/mlflow.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}={raw}: '{key}' is not a section")
    node[keys[-1]] = yaml.safe_load(raw)  # a YAML scalar: 3, 0.5, true, null, text


def load_config(model: type[BaseModel], path: str | os.PathLike | None = None, overrides: list[str] = ()):
    """YAML file (optional) + ``key=value`` overrides (dotted keys for sections) -> model."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        tree = loaded or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key=value")
        _set(tree, key.strip(), value)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid config: {problems}") from None


__all__ = ["ConfigError", "LossConfig", "TrainConfig", "load_config", "tracking_uri"]
