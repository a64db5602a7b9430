"""Ray Train: data-parallel adversarial training of G, D_ir and D_vi, tracked in MLflow.

Data-parallel without DDP wrappers, on purpose: the critic step runs three forwards (real,
fake, interpolates) and the WGAN-GP penalty differentiates through a gradient
(``create_graph=True``); DDP's reducer expects one forward per backward and fires its hooks
during the backward, which breaks or desynchronises under that pattern. Here every worker
runs ``dwsfusion.step.train_step`` on its shard and, after each backward, one coalesced
all-reduce averages that network's gradients: the same arithmetic as DDP, applied after the
complete (double) backward. BatchNorm running statistics are averaged after each step
(DDP would broadcast rank 0's). Parameters start equal (broadcast from rank 0), so they
stay equal; ``ranks_identical`` in every epoch's metrics checks it.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import posixpath
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from data_prep import load_manifest, ray_session, read_patches
from data_prep.ray_session import quiet_libraries
from data_prep.storage import is_uri, local_path, location_exists
from dwsfusion.augment import add_visible_noise, augment_pairs
from dwsfusion.checkpoints import TRAIN_FORMAT, TRAIN_STATE_FILE, save_generator
from dwsfusion.errors import UsageError
from dwsfusion.losses import supervised_losses
from dwsfusion.metrics import compute_metrics
from dwsfusion.precision import autocast
from dwsfusion.step import (
    Networks,
    Optimizers,
    build_optimizers,
    critic_updates,
    recalibrate_batchnorm,
    train_step,
)

from .config import TrainConfig
from .plots import fusion_grid, loss_curves
from .runtime import named_run, use_tracking

VAL_METRICS = ("Qabf", "VIF", "SSIM", "MI")
# The sweep objective: loss-independent fusion quality on the fixed validation patches. The
# validation *loss* cannot rank trials that weight its own terms differently; these three
# metrics each lie in [0, 1] for useful fusions (gradient transfer, information fidelity,
# structure) and are the paper's headline ones, so their plain mean is the score.
SCORE_METRICS = ("Qabf", "VIF", "SSIM")


# ---------------------------------------------------------------- distributed helpers
def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(module: nn.Module) -> None:
    """All-reduce-average every gradient of ``module`` in one coalesced call."""
    if _world() == 1:
        return
    params = list(module.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= _world()
    for p, synced in zip(params, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        p.grad = synced.view_as(p)


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) across ranks."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if _world() == 1 or not buffers:
        return
    flat = torch._utils._flatten_dense_tensors(buffers)
    dist.all_reduce(flat)
    flat /= _world()
    for b, synced in zip(buffers, torch._utils._unflatten_dense_tensors(flat, buffers), strict=True):
        b.copy_(synced)


def broadcast_state(module: nn.Module) -> None:
    if _world() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def all_ranks(flag: bool) -> bool:
    """True only if every rank says True (ranks stop an epoch together: no hung collective)."""
    if _world() == 1:
        return flag
    value = torch.tensor([1 if flag else 0])
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def mean_across_ranks(values: dict[str, float], count: int) -> dict[str, float]:
    """Sample-weighted mean of per-rank sums: ``values`` hold sums over ``count`` samples."""
    keys = sorted(values)
    vector = torch.tensor([values[k] for k in keys] + [float(count)], dtype=torch.float64)
    if _world() > 1:
        dist.all_reduce(vector)
    total = max(vector[-1].item(), 1.0)
    return {k: vector[i].item() / total for i, k in enumerate(keys)}


def _nodes_in_use() -> list[str]:
    """The distinct Ray node ids the ranks run on, sorted."""
    import ray  # Ray: heavy and optional, imported on use

    node = ray.get_runtime_context().get_node_id()
    if _world() == 1:
        return [node]
    gathered: list = [None] * _world()
    dist.all_gather_object(gathered, node)
    return sorted(set(gathered))


def parameter_fingerprint(nets: Networks) -> torch.Tensor:
    """Float64 sums of every parameter and buffer of the three networks (one per tensor)."""
    tensors = [t for m in nets.modules().values() for t in list(m.parameters()) + list(m.buffers())]
    return torch.stack([t.detach().double().sum() for t in tensors]).cpu()


def ranks_identical(nets: Networks) -> tuple[bool, float]:
    fingerprint = parameter_fingerprint(nets)
    if _world() == 1:
        return True, 0.0
    gathered = [torch.zeros_like(fingerprint) for _ in range(_world())]
    dist.all_gather(gathered, fingerprint)
    spread = max((g - gathered[0]).abs().max().item() for g in gathered)
    return spread == 0.0, spread


# ---------------------------------------------------------------- the worker loop
def _to_images(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, P, P) -> float (B, 1, P, P) in [0, 1]."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    ir = (batch["ir"].to(device).float() / 255).unsqueeze(1).contiguous(memory_format=memory)
    vi = (batch["vi"].to(device).float() / 255).unsqueeze(1).contiguous(memory_format=memory)
    return ir, vi


def _batches(shard, batch_size: int, seed: int, shuffle_buffer: int, limit: int | None, drop_last: bool = True):
    kwargs = {"batch_size": batch_size, "drop_last": drop_last}
    if shuffle_buffer:
        kwargs.update(local_shuffle_buffer_size=shuffle_buffer, local_shuffle_seed=seed)
    iterator = iter(shard.iter_torch_batches(**kwargs))
    step = 0
    while limit is None or step < limit:
        batch = next(iterator, None)
        if not all_ranks(batch is not None):
            return
        yield batch
        step += 1


@torch.no_grad()
def _validation_loss(generator: nn.Module, shard, config: TrainConfig, device: torch.device) -> float:
    """Generator loss without the adversarial term (10*content + dual-weight), all ranks."""
    weights = config.loss
    generator.eval()
    sums, count = {"val_loss": 0.0}, 0
    for batch in _batches(shard, config.per_worker_batch(), 0, 0, None, drop_last=False):  # every val patch
        ir, vi = _to_images(batch, device, config.channels_last)
        loss = supervised_losses(generator(ir, vi), ir, vi, weights)["supervised"]
        sums["val_loss"] += loss.item() * ir.shape[0]
        count += ir.shape[0]
    generator.train()
    return mean_across_ranks(sums, count)["val_loss"]


@torch.no_grad()
def _validation_images(generator: nn.Module, val_ir: np.ndarray, val_vi: np.ndarray, device: torch.device):
    """Metrics of the fixed validation patches and the rows of the fusion grid."""
    generator.eval()
    ir = torch.from_numpy(val_ir).float().div(255).unsqueeze(1).to(device)
    vi = torch.from_numpy(val_vi).float().div(255).unsqueeze(1).to(device)
    fused, w_ir, w_vi, _, _ = generator.fuse(ir, vi)
    generator.train()
    fused_u8 = np.floor(fused[:, 0].float().cpu().numpy() * 255).astype(np.uint8)
    per_image = [compute_metrics(a, b, f, VAL_METRICS) for a, b, f in zip(val_ir, val_vi, fused_u8, strict=True)]
    metrics = {f"val_{k}": float(np.mean([m[k] for m in per_image])) for k in VAL_METRICS}
    metrics["val_score"] = float(np.mean([metrics[f"val_{k}"] for k in SCORE_METRICS]))
    rows = [
        (val_ir[i] / 255, val_vi[i] / 255, *(t[i, 0].float().cpu().numpy() for t in (fused, w_ir, w_vi)))
        for i in range(len(val_ir))
    ]
    return metrics, rows


# ---------------------------------------------------------------- the worker's state
@dataclass
class TrainState:
    """What a worker trains and a checkpoint holds: the networks, their optimisers and
    schedules, the gradient scaler, the generator's moving average, and how far the run got."""

    nets: Networks
    optimizers: Optimizers
    schedulers: dict[str, torch.optim.lr_scheduler.ReduceLROnPlateau]
    scaler: torch.amp.GradScaler | None
    average: torch.optim.swa_utils.AveragedModel | None  # the generator's EMA, when ema_decay
    best: dict  # value, monitor, epoch, generator (the best scored weights), bad_epochs
    history: list[dict] = field(default_factory=list)  # rank 0's epoch metrics
    start_epoch: int = 0

    @property
    def optimizer_by_name(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.optimizers.generator, "d_ir": self.optimizers.d_ir, "d_vi": self.optimizers.d_vi}

    @property
    def scored(self) -> nn.Module:
        """The generator that is scored, scheduled on and kept: the raw one, or its average."""
        return self.average.module if self.average is not None else self.nets.generator

    @classmethod
    def start(cls, config: TrainConfig, device: torch.device) -> TrainState:
        nets = config.start_networks()  # seeds torch with config.seed first
        for module in nets.modules().values():
            module.to(device)
            if config.channels_last:
                module.to(memory_format=torch.channels_last)
        optimizers = build_optimizers(nets, config.lr_g, config.lr_d)
        scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
        higher_is_better = config.monitor == "val_score"
        mode, factor, patience = "max" if higher_is_better else "min", config.plateau_factor, config.plateau_patience
        opts = (optimizers.generator, optimizers.d_ir, optimizers.d_vi)
        schedulers = {
            k: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode=mode, factor=factor, patience=patience)
            for k, o in zip(("generator", "d_ir", "d_vi"), opts, strict=True)
        }
        average = None
        if config.ema_decay:
            ema = torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay)
            average = torch.optim.swa_utils.AveragedModel(nets.generator, multi_avg_fn=ema)
        worst = -math.inf if higher_is_better else math.inf
        best = {"value": worst, "monitor": config.monitor, "epoch": -1, "generator": None, "bad_epochs": 0}
        return cls(nets, optimizers, schedulers, scaler, average, best)

    def load(self, state: dict) -> None:
        """Continue from a checkpoint's ``state`` (``to_dict``)."""
        for key, module in self.nets.modules().items():
            module.load_state_dict(state["nets"][key])
        for key, optimizer in self.optimizer_by_name.items():
            optimizer.load_state_dict(state["optimizers"][key])
            self.schedulers[key].load_state_dict(state["schedulers"][key])
        self.start_epoch, self.best, self.history = state["epoch"] + 1, state["best"], state["history"]
        if self.average is not None and state.get("generator_average") is not None:
            self.average.load_state_dict(state["generator_average"])

    def to_dict(self, epoch: int, run_id: str) -> dict:
        return {
            "format": TRAIN_FORMAT,
            "epoch": epoch,
            "generator_config": self.nets.generator.config.to_dict(),
            "nets": {k: m.state_dict() for k, m in self.nets.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizer_by_name.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "best": self.best,
            "history": self.history,
            "mlflow_run_id": run_id,
            "generator_average": self.average.state_dict() if self.average is not None else None,
        }

    def keep_if_best(self, metrics: dict, config: TrainConfig) -> None:
        """Step the schedules on the monitored value and keep the scored generator if it is the best."""
        monitored = metrics[config.monitor]
        for scheduler in self.schedulers.values():
            scheduler.step(monitored)
        better = monitored > self.best["value"] if config.monitor == "val_score" else monitored < self.best["value"]
        if better:
            weights = {k: v.detach().cpu().clone() for k, v in self.scored.state_dict().items()}
            self.best = {**self.best, "value": monitored, "epoch": metrics["epoch"], "generator": weights}
            self.best["bad_epochs"] = 0
        else:
            self.best["bad_epochs"] += 1


def _say(line: str) -> None:
    """One console line from a worker. Straight to the process's stdout, which Ray streams to
    the driver: Ray Train's patched ``print`` would also log it, and the line shows twice."""
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()


# ---------------------------------------------------------------- the worker's steps
def _set_up_worker(loop_config: dict) -> tuple[TrainConfig, int, torch.device]:
    """The worker's console, config, rank, device and threads; NumPy seeded by rank."""
    import ray.train  # Ray: heavy and optional, imported on use
    import ray.train.torch

    verbose = loop_config.get("verbose", False)
    quiet_libraries(verbose)
    if not verbose:  # Ray Train logs every report's whole metrics dict at INFO through the root logger
        logging.getLogger().setLevel(logging.WARNING)
    config = TrainConfig.model_validate(loop_config["train"])
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # the worker's share of the node: as many torch threads as CPUs reserved
        torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    np.random.seed(config.seed + rank)
    return config, rank, device


def _restore(state: TrainState, device: torch.device) -> None:
    """Resume from Ray Train's checkpoint, if any (a restarted worker group or a resumed run),
    then make every rank start from rank 0's parameters."""
    import ray.train  # Ray: heavy and optional, imported on use

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state.load(torch.load(Path(folder) / TRAIN_STATE_FILE, map_location=device, weights_only=True))
    for module in state.nets.modules().values():
        broadcast_state(module)


def _train_epoch(state: TrainState, config: TrainConfig, shard, epoch: int, rank: int, device: torch.device) -> dict:
    """One pass over this worker's shard: the averaged losses and throughput; the batches kept
    re-estimate the scored generator's BatchNorm statistics."""
    weights = config.loss
    if epoch < config.adversarial_from_epoch:
        weights = replace(weights, adversarial=0.0)  # the critics train, the generator does not see them
    critic_steps = critic_updates(config.loss, config.critic_steps)  # the run's weight's, not the warm-up's 0
    started, sums, samples = time.perf_counter(), {}, 0
    recent = collections.deque(maxlen=config.bn_recalibration_batches)  # for the BatchNorm statistics
    if config.augment or config.vis_noise:  # seeded by (seed, epoch, rank): a resumed epoch redraws them
        seed = np.random.SeedSequence([config.seed, epoch, rank]).generate_state(1)[0]
        draws = torch.Generator().manual_seed(int(seed))
    batch_size = config.per_worker_batch()
    for batch in _batches(shard, batch_size, config.seed + epoch, config.shuffle_buffer, config.max_steps_per_epoch):
        ir, vi = _to_images(batch, device, config.channels_last)
        if config.augment:  # the BatchNorm statistics below are re-estimated on the batches as read
            ir, vi = augment_pairs(ir, vi, draws)
        if config.vis_noise:
            vi = add_visible_noise(vi, config.vis_noise, draws)
        with autocast(device, config.amp):
            nets, scaler = state.nets, state.scaler
            logs = train_step(
                nets, state.optimizers, ir, vi, weights, average_gradients, config.grad_clip, scaler, critic_steps
            )
        for module in state.nets.modules().values():
            average_buffers(module)
        if state.average is not None:  # from identical weights on every rank: identical averages
            state.average.update_parameters(state.nets.generator)
        for key, value in logs.items():
            sums[f"train_{key}"] = sums.get(f"train_{key}", 0.0) + value * ir.shape[0]
        samples += ir.shape[0]
        recent.append(batch)
    if samples == 0:
        raise RuntimeError(f"epoch {epoch}: no training batch of {batch_size} patches per worker")
    metrics = mean_across_ranks(sums, samples)
    metrics["samples_per_second_per_worker"] = samples / (time.perf_counter() - started)
    metrics["train_steps"] = samples // batch_size  # the same on every rank
    if recent:  # every rank on its own batches, then averaged: the ranks stay identical
        recalibrate_batchnorm(state.scored, (_to_images(b, device, config.channels_last) for b in recent))
        average_buffers(state.scored)
    return metrics


def _epoch_line(config: TrainConfig, epoch: int, metrics: dict) -> str:
    critics = (
        f"d_ir {metrics['train_d_ir_loss']:.4f}  d_vi {metrics['train_d_vi_loss']:.4f}  "
        if "train_d_ir_loss" in metrics
        else ""  # adversarial weight 0: no critic step
    )
    return (
        f"[{config.name} epoch {epoch}] g {metrics['train_g_total']:.4f}  {critics}val {metrics['val_loss']:.4f}  "
        f"Qabf {metrics['val_Qabf']:.3f}  VIF {metrics['val_VIF']:.3f}  score {metrics['val_score']:.3f}  "
        f"lr {metrics['lr_g']:.0e}  {metrics['samples_per_second_per_worker']:.1f} samples/s/worker"
    )


def _report_diverged(config: TrainConfig, metrics: dict, epoch: int, rank: int) -> None:
    """A non-finite loss (the same all-reduced values on every rank): said, logged, reported."""
    import mlflow  # MLflow: heavy and optional, imported on use
    import ray.train

    metrics.update(epoch=epoch, diverged=1.0, val_score=0.0)
    if rank == 0:
        _say(f"[{config.name} epoch {epoch}] diverged (non-finite loss): stopping this run")
        mlflow.log_metrics({"diverged": 1.0, "val_score": 0.0}, step=epoch)
        mlflow.set_tag("diverged", "true")
    ray.train.report({k: (v if math.isfinite(v) else -1.0) for k, v in metrics.items()})


def _report(state: TrainState, config: TrainConfig, metrics: dict, rows: list, run_id: str, progress: bool) -> None:
    """Rank 0's report of an epoch: to MLflow (metrics, fusion grid), the console, and Ray Train
    with a checkpoint (the other ranks report their metrics alone)."""
    import mlflow  # MLflow: heavy and optional, imported on use
    import ray.train

    epoch = metrics["epoch"]
    state.history.append(metrics)
    mlflow.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
    mlflow.log_image(fusion_grid(rows), f"fusion_grid/epoch_{epoch:03d}.png")
    if progress:
        _say(_epoch_line(config, epoch, metrics))
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state.to_dict(epoch, run_id), Path(folder) / TRAIN_STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's worker function: set up, restore, then per epoch train, validate, keep the
    best and report; rank 0 tracks the run in MLflow and logs the best generator at the end."""
    import mlflow  # MLflow: heavy and optional, imported on use
    import ray.train

    config, rank, device = _set_up_worker(loop_config)
    state = TrainState.start(config, device)
    _restore(state, device)
    nodes = _nodes_in_use()
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    run_id = loop_config["mlflow_run_id"]
    if rank == 0:
        use_tracking(config.tracking_uri())
        mlflow.start_run(run_id=run_id)
        mlflow.set_tag("ray_nodes", ",".join(nodes))  # where the ranks ran (after a restart: the latest)

    for epoch in range(state.start_epoch, config.epochs):
        if state.best["bad_epochs"] >= config.early_stop_patience:
            break
        metrics = _train_epoch(state, config, train_shard, epoch, rank, device)
        metrics["val_loss"] = _validation_loss(state.scored, val_shard, config, device)
        # Every rank scores the same fixed patches with the same weights: the same numbers everywhere,
        # so the schedule, early stopping and the best generator agree without a collective.
        image_metrics, rows = _validation_images(state.scored, loop_config["val_ir"], loop_config["val_vi"], device)
        metrics.update(image_metrics)
        if not all(math.isfinite(v) for v in metrics.values()):
            _report_diverged(config, metrics, epoch, rank)
            break
        metrics["epoch"] = epoch
        state.keep_if_best(metrics, config)
        identical, spread = ranks_identical(state.nets)
        metrics["lr_g"] = state.optimizers.generator.param_groups[0]["lr"]
        metrics.update(ranks_identical=float(identical), rank_parameter_spread=spread, diverged=0.0)
        metrics["nodes"] = float(len(nodes))
        if rank == 0:
            _report(state, config, metrics, rows, run_id, loop_config.get("progress", True))
        else:
            ray.train.report(metrics)

    if rank == 0:
        _finish(state.nets, state.best, state.history, config)
        mlflow.end_run()


def _finish(nets: Networks, best: dict, history: list[dict], config: TrainConfig) -> None:
    """Rank 0: loss curves, and the best generator as an MLflow model (pyfunc, any size)."""
    import mlflow  # MLflow: heavy and optional, imported on use

    from .mlflow_model import log_generator  # imports MLflow: see above

    if history:
        mlflow.log_figure(loss_curves(history), "loss_curves.png")
    if best["generator"] is not None:
        nets.generator.load_state_dict(best["generator"])
        with tempfile.TemporaryDirectory() as folder:
            path = save_generator(
                nets.generator.cpu(),
                Path(folder) / "generator.pt",
                meta={"epoch": best["epoch"], best["monitor"]: best["value"]},
            )
            mlflow.log_metric(f"best_{best['monitor']}", best["value"])
            mlflow.log_metric("best_epoch", best["epoch"])
            log_generator(str(path))


# ---------------------------------------------------------------- the driver
@dataclass
class TrainResult:
    checkpoint: str | None  # the last reported checkpoint folder (state.pt inside)
    metrics: dict
    mlflow_run_id: str
    storage: str


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mlflow_run(config: TrainConfig, resume: bool, parent_run_id: str | None = None) -> str:
    """The run's MLflow id: the existing one for a resumed name, else a new run."""
    return named_run(
        config.tracking_uri(),
        config.mlflow_experiment,
        "dwsfusion_train_name",
        config.name,
        resume,
        parent_run_id,
        _flatten(config.model_dump(mode="json")),
        artifact_location=config.mlflow_artifact_location,
    )


def load_inputs(config: TrainConfig) -> tuple:
    """(train dataset, val dataset held by the driver, fixed val patches) from the prepared shards.
    A sweep calls this once in its driver: Ray Data reads started inside a Tune trial would
    be confined to the trial's small placement group and wait forever."""
    train_data = read_patches(config.data, "train")
    if config.materialize:  # read once, then every epoch iterates the object store
        train_data = held_by_driver(train_data)
    val_data = held_by_driver(read_patches(config.data, "val"))  # small by design: read once
    return train_data, val_data, val_data.take_batch(config.val_images, batch_format="numpy")


def held_by_driver(dataset):
    """``dataset`` read once into blocks that the driver itself puts in the object store, so
    their primary copies sit on the driver's node. ``.materialize()`` leaves each block on the
    node whose read task made it: when that node is lost, Ray must rebuild the block by lineage
    while the restarted worker group already waits on it, and in the node-loss drill the
    validation fetch timed out first (tests/ray/test_multinode.py). A lost worker node loses
    none of these blocks; the price is that they must fit the driver node's object store."""
    import ray  # Ray: heavy and optional, imported on use

    return ray.data.from_arrow(ray.get(dataset.to_arrow_refs()))


def run_training(
    config: TrainConfig,
    resume: bool = False,
    parent_run_id: str | None = None,
    callbacks: list | None = None,
    inputs: tuple | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train with Ray Train on the prepared shards of ``config.data``. ``resume`` continues
    the run called ``config.name`` under ``config.storage_path`` from its last checkpoint.
    ``parent_run_id`` nests the MLflow run; ``callbacks`` go to Ray Train (e.g. Tune's);
    ``inputs`` are ``load_inputs``' result when the caller has read them already;
    ``progress`` prints one line per epoch."""
    # Ray: heavy and optional, imported on use
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    config.per_worker_batch()  # fail early on an uneven batch
    manifest = load_manifest(config.data)
    for split in ("train", "val"):
        if manifest["counts"].get(split, {}).get("patches", 0) == 0:
            raise UsageError(f"{config.data}: the '{split}' split has no patches (see its manifest)")
    storage = config.storage()
    run_dir = posixpath.join(storage, config.name)
    if not resume and location_exists(run_dir):
        raise UsageError(f"{run_dir}: a run with this name exists; pass --resume to continue it or choose another name")
    # A local Ray needs CPUs for Ray Data's reads beside the workers.
    ray_session.ensure_ray(cpus_needed=config.num_workers * config.cpus_per_worker + 2)

    train_data, val_data, val = inputs or load_inputs(config)
    run_id = _mlflow_run(config, resume, parent_run_id)
    resources = {"CPU": config.cpus_per_worker} | ({"GPU": config.gpus_per_worker} if config.use_gpu else {})
    resources |= config.worker_resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": config.model_dump(mode="json"),
            "mlflow_run_id": run_id,
            "val_ir": np.ascontiguousarray(val["ir"]),
            "val_vi": np.ascontiguousarray(val["vi"]),
            "progress": progress,
            "verbose": ray_session.VERBOSE,
        },
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker=resources,
            placement_strategy=config.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu and config.gpus_per_worker >= 1 else "gloo"),
        run_config=RunConfig(
            name=config.name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
            # INFO echoes every report's whole metrics dict; our epoch line says what matters.
            logging_config=LoggingConfig(log_level="INFO" if ray_session.VERBOSE else "WARNING"),
        ),
        datasets={"train": train_data, "val": val_data},
        dataset_config=_ingest_config(),
    )
    result = trainer.fit()
    checkpoint = _checkpoint_uri(result.checkpoint) if result.checkpoint else None
    return TrainResult(checkpoint, dict(result.metrics or {}), run_id, storage)


def _ingest_config():
    """Ray Train's default ingest options, stated: its own default copies the deprecated
    ``exclude_resources`` into new options, and every run printed Ray's deprecation warning."""
    import ray.data  # Ray: heavy and optional, imported on use
    from ray.train import DataConfig

    current = ray.data.DataContext.get_current().execution_options
    options = ray.data.ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=current.preserve_order,
        verbose_progress=current.verbose_progress,
    )
    return DataConfig(execution_options=options)


def _checkpoint_uri(checkpoint) -> str:
    """Where a checkpoint is, as a user gives it: a local path, or a URI with its scheme (Ray
    gives an object store's path without one, e.g. bucket/run/checkpoint_...)."""
    kind = getattr(checkpoint.filesystem, "type_name", "local")
    if kind == "local":
        return checkpoint.path
    scheme = {"gcs": "gs"}.get(kind, kind)
    return f"{scheme}://{checkpoint.path}"


def load_train_state(checkpoint_dir: str | os.PathLike) -> dict:
    """A training checkpoint (weights_only): nets, optimisers, schedulers, epoch, best, history.
    ``checkpoint_dir`` is a folder or an object-store URI (s3://..., fetched through Ray)."""
    location = str(checkpoint_dir)
    if is_uri(location):
        import ray.train  # heavy and optional: only an object store's checkpoint is fetched through Ray

        with ray.train.Checkpoint(location).as_directory() as folder:
            return torch.load(Path(folder) / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    return torch.load(Path(local_path(location)) / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
