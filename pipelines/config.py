"""Typed settings of the pipeline stages and how they are loaded.

Each stage's settings are defined once, as one pydantic model, next to the stage or here:
``data_prep.config.PrepSettings``, ``SamplesSettings`` and ``TrainSettings`` (here),
``tune.sweep.SweepSettings``, ``RegisterSettings`` and ``FuseSettings`` (here; the batch job's
``pipelines.batch.run.FuseJob`` adds what to fuse, and travels to its actors as is). The CLI
takes its options and defaults from them (``pipelines.cli``), the Python API takes them as
arguments, and the workflow config nests them. YAML files and ``key=value`` overrides (dotted
keys for sections) are parsed as YAML scalars, never evaluated; every validation error names
the field. Validation has no side effects (nothing is created until a stage runs).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data_prep.storage import is_uri, local_path
from dwsfusion.constants import METRIC_NAMES, AlphaInit, FusionInit
from dwsfusion.errors import UsageError
from dwsfusion.loss_weights import LossWeights
from dwsfusion.model import GeneratorConfig
from dwsfusion.step import Networks, build_networks
from dwsfusion.stream import StreamOptions
from dwsfusion.tiling import TileConfig

from .batch.archives import ArchiveLimits, archive_kind
from .runtime import store_path, tracking_uri


class ConfigError(UsageError):
    """A configuration file or override that cannot be used; names the field."""


def describe(exc: ValidationError, section: str = "") -> str:
    """'field.path: message; ...' for every problem of a pydantic validation error."""
    prefix = f"{section}." if section else ""
    return "; ".join(
        (f"{prefix}{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else (f"{section}: " if section else ""))
        + e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )


def validate(model: type[BaseModel], tree: dict, section: str = "", where: str = ""):
    """``model`` from a dict; a ``ConfigError`` naming each bad field otherwise."""
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{where}invalid config: {describe(exc, section)}") from None


# ------------------------------------------------------------------ dotted keys
def get_dotted(tree: dict, key: str):
    """``tree['a']['b']`` for ``'a.b'``; KeyError naming the first missing part."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def set_dotted(tree: dict, key: str, value) -> None:
    """``tree['a']['b'] = value`` for ``'a.b'``, creating missing sections."""
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: '{part}' is not a section")
    node[last] = value


def load_config(model: type[BaseModel], path: str | os.PathLike | None = None, overrides: list[str] = ()):
    """YAML file (optional) + ``key=value`` overrides (dotted keys for sections) -> model."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        tree = loaded or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key=value")
        set_dotted(tree, key.strip(), yaml.safe_load(value))  # a YAML scalar: 3, 0.5, true, null, text
    return validate(model, tree, where=f"{path}: " if path else "")


# ------------------------------------------------------------------ stage settings
class SamplesSettings(BaseModel):
    """Seeded synthetic IR/VIS scenes (``dwsfusion samples``, the workflow without a source)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(6, ge=2, description="pairs to write")
    seed: int = Field(0, description="scene seed")


class RegisterSettings(BaseModel):
    """Where a registration goes and the gate it passes (``dwsfusion register``, the workflow's
    ``registry:`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("dwsfusion", description="registered model name")
    alias: str = Field("champion", description="champion (through the gate), challenger, or any alias")
    gate_metrics: tuple[str, ...] = Field(("Qabf", "VIF", "SSIM"), description="metrics the champion gate compares")
    tolerance: float = Field(0.0, ge=0, description="relative slack of the gate (0.01 = 1 %)")
    eval_source: str | None = Field(None, description="evaluation folder with ir/ + vi/ (default: seeded samples)")

    @field_validator("gate_metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(METRIC_NAMES))
        if unknown or not value:
            raise ValueError(f"unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(METRIC_NAMES)}")
        return value


def fuse_output(value: str) -> str:
    """A batch fusion output: a folder, a local archive, or an object-store prefix (shards out).
    An object-store archive is refused by name: one archive is assembled on the driver."""

    if is_uri(value) and archive_kind(value) is not None:
        raise ValueError(
            f"{value}: on object storage the output is a prefix (s3://bucket/night-fused/: one fused shard per "
            "input shard, written by the workers); an archive output (.tar, .tar.gz, .zip) is a local path"
        )
    return local_path(value)


class FuseSettings(BaseModel):
    """How batch fusion runs (``dwsfusion fuse --input/--output``, the workflow's ``fuse:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: tuple[str, ...] = Field(
        METRIC_NAMES, description="metrics per pair: all, none, or a list such as Qabf,VIF,SSIM"
    )
    rounding: Literal["truncate", "round"] = Field(
        "truncate", description="float -> integer pixels: the release truncates, or round to nearest"
    )
    actors: int | None = Field(None, ge=1, description="model replicas (default: one per GPU, else per CPU)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs (and torch threads) per actor")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor (fractions share a GPU)")
    batch_size: int = Field(
        1, ge=1, description="pairs per forward pass, same size (1 is fastest on a CPU; 16 or more on a GPU)"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="inference precision (autocast)")
    engine: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="what runs the model: auto (an .onnx checkpoint on ONNX Runtime, else PyTorch), torch, or "
        "onnxruntime (with --model: the ONNX file dwsfusion export attached to the registered model)",
    )
    tiles: TileConfig = TileConfig()
    limits: ArchiveLimits = ArchiveLimits()

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_list(cls, value):
        return metric_list(value)

    def identity(self) -> dict:
        """What decides the images and rows: a rerun into an output made with other values is
        refused (the manifest's ``settings``)."""
        tiles = asdict(self.tiles)
        return {"metrics": list(self.metrics), "rounding": self.rounding, "tiles": tiles, "precision": self.precision}

    def stream_options(self) -> StreamOptions:
        """The library's per-pair path (``dwsfusion.stream``) as these settings run it."""
        threads = int(max(1, self.cpus_per_actor))  # decode / encode / metric threads beside the forward
        limit = self.limits.max_pixels
        return StreamOptions(self.metrics, self.rounding, self.tiles, self.precision, self.batch_size, threads, limit)


def metric_list(value) -> tuple[str, ...]:
    """'all' (or None), 'none', a comma list or a sequence of names -> the metric names."""
    if isinstance(value, list | tuple) and len(value) == 1 and value[0] in ("all", "none"):
        value = value[0]
    if value in ("all", None):
        return METRIC_NAMES
    if value == "none":
        return ()
    if isinstance(value, str):
        value = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = sorted(set(value) - set(METRIC_NAMES))
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)} (or all, none)")
    return tuple(value)


class CompareSettings(BaseModel):
    """How ``dwsfusion compare`` scores and reports (pipelines.compare; the CLI's options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: tuple[str, ...] = Field(METRIC_NAMES, description="metrics on the board: all, or a list such as Qabf,VIF")
    missing: Literal["error", "common"] = Field(
        "error",
        description="a method without an image for some pair: error (each named, nothing scored), or common (all "
        "methods on the pairs every one has; those left out are listed)",
    )
    figure_pairs: int = Field(3, ge=0, description="pairs shown as side-by-side crops")
    crop: int = Field(160, ge=16, description="side of those crops in pixels")
    workers: int | None = Field(
        None,
        ge=1,
        description="Ray actors scoring pairs (default: this process alone below 500 method-pairs, "
        "else one actor per CPU)",
    )
    costs: bool = Field(True, description="measure each model's parameters, FLOPs and seconds per 640x480 pair")
    title: str = Field("IR-VIS fusion comparison", description="the HTML page's title")

    @field_validator("metrics", mode="before")
    @classmethod
    def _some_metrics(cls, value):
        names = metric_list(value)
        if not names:
            raise ValueError("a comparison needs at least one metric")
        return names


class TrainSettings(BaseModel):
    """How to train. Defaults follow the release: Adam (G) / RMSprop (D), lr 0.01, batch 16,
    ReduceLROnPlateau (patience 2, factor 0.1), early stopping after 5 bad epochs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # GPUs per worker with use_gpu: 1 runs nccl; a fraction lets workers share a GPU, and then the
    # gradient all-reduce runs on gloo (nccl refuses two ranks on one device).
    gpus_per_worker: float = Field(1.0, gt=0, le=1)
    cpus_per_worker: float = Field(1.0, gt=0)  # also the worker's torch threads (Ray sets OMP_NUM_THREADS)
    max_failures: int = Field(0, ge=-1)  # worker-group restarts from the last checkpoint
    # Where the workers go: PACK fills a node first; STRICT_SPREAD puts each on its own node.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    worker_resources: dict[str, float] = {}  # more Ray resources per worker, e.g. a node type's custom resource
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)  # global: split evenly across workers
    max_steps_per_epoch: int | None = Field(None, ge=1)
    lr_g: float = Field(0.01, gt=0)
    lr_d: float = Field(0.01, gt=0)
    plateau_patience: int = Field(2, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    early_stop_patience: int = Field(5, ge=1)
    # What the plateau schedule, early stopping and the best generator follow: the release's
    # validation loss, or val_score (mean Qabf, VIF, SSIM of the fixed validation patches), which
    # tracks fusion quality where the loss does not (docs/fidelity.md).
    monitor: Literal["val_loss", "val_score"] = "val_loss"
    grad_clip: float | None = Field(None, gt=0)
    amp: Literal["off", "bf16", "fp16"] = "off"  # fp16 runs with a GradScaler (the penalty's inner gradient too)
    channels_last: bool = False
    seed: int = 0
    channel_min_hidden: int = Field(0, ge=0)
    # Where the generator's fusion head starts: "sum" of its two weighted sources, or the
    # "release"'s default (random) initialisation (dwsfusion.model.init; docs/fidelity.md).
    fusion_init: FusionInit = "sum"
    # Where its AlphaNet starts: the "release"'s random initialisation (dead, alpha 0 and no
    # gradient, on some seeds) or "alive" at alpha 0.3 for every seed (dwsfusion.model.init).
    alpha_init: AlphaInit = "release"
    loss: LossWeights = LossWeights()
    # After each epoch, BatchNorm running statistics are re-estimated on the fusion path over
    # this many of the epoch's last batches (0: keep the training's running statistics, as the
    # release does). See dwsfusion.step.recalibrate_batchnorm.
    bn_recalibration_batches: int = Field(8, ge=0)
    val_images: int = Field(4, ge=1)  # fixed validation patches for metrics and the grid
    shuffle_buffer: int = Field(256, ge=0)
    materialize: bool = False  # hold the train patches in Ray's object store after one read
    # Flip each training pair and give each image a random gamma (dwsfusion.augment): the
    # target max(ir, vi) follows, and a small set shows more ir/vi intensity relations.
    augment: bool = False
    # Gaussian pixel noise of this many grey levels (of 255) on every training VIS patch
    # (dwsfusion.augment.add_visible_noise): gives a clean visible set the pixel-level detail
    # of the images fusion will see (docs/fidelity.md). 0: none.
    vis_noise: float = Field(0.0, ge=0, le=64)
    # Score, schedule and keep an exponential moving average of the generator's weights
    # (torch.optim.swa_utils, updated every step, this decay) instead of the raw weights, the
    # usual steadier for a GAN generator. 0: off, the release's way; 0.995 did not lift the
    # recipe's worst seed (docs/fidelity.md, "Averaging the weights").
    ema_decay: float = Field(0.0, ge=0, lt=1)
    # The critics (WGAN-GP): updates of each per generator step (n_critic; None: 1 with an
    # adversarial term, 0 without, the release's), and the epoch from which the generator sees
    # their term: before it they train on its output while it learns from the content and
    # dual-weight terms alone, a warm-up from the sum start (docs/fidelity.md, "The adversarial term").
    critic_steps: int | None = Field(None, ge=0)
    adversarial_from_epoch: int = Field(0, ge=0)

    def start_networks(self) -> Networks:
        """The networks a run of these settings starts from, seeded: the training loop's start,
        and the 'start' the workflow's evaluation scores beside the trained generator."""
        config = GeneratorConfig(channel_min_hidden=self.channel_min_hidden)
        return build_networks(config, self.fusion_init, self.seed, self.alpha_init)

    @model_validator(mode="after")
    def _critics_have_a_term(self) -> TrainSettings:
        if self.adversarial_from_epoch and not self.loss.adversarial:
            raise ValueError("adversarial_from_epoch needs loss.adversarial > 0 (a term to warm the critics up for)")
        return self


class TrainConfig(TrainSettings):
    """A training run: the settings, its data, where it is stored, and its MLflow store."""

    data: str  # a prep output folder or URI (its manifest.json lists the shards)
    storage_path: str = "runs/train"  # Ray Train storage: under the home when relative, NFS or s3://...
    name: str = "dwsfusion"  # run name; the same name resumes
    mlflow_tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else the home's runs/mlflow.db
    mlflow_experiment: str = "dwsfusion"
    # New experiments' artifacts; default: runs/mlartifacts beside a SQLite store (runtime.artifact_root)
    mlflow_artifact_location: str | None = None

    def per_worker_batch(self) -> int:
        if self.batch_size % self.num_workers:
            raise ConfigError(f"batch_size={self.batch_size} is not divisible by num_workers={self.num_workers}")
        return self.batch_size // self.num_workers

    def tracking_uri(self) -> str:
        return tracking_uri(self.mlflow_tracking_uri)

    def storage(self) -> str:
        return store_path(self.storage_path, "storage_path")


__all__ = [
    "CompareSettings",
    "ConfigError",
    "FuseSettings",
    "RegisterSettings",
    "SamplesSettings",
    "TrainConfig",
    "TrainSettings",
    "describe",
    "get_dotted",
    "load_config",
    "set_dotted",
    "validate",
]
