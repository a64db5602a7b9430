"""A short single-process training run on image pairs, for the quickstart and smoke tests.

Cluster-scale training (Parquet shards, Ray Train DDP, MLflow) lives in ``pipelines/``;
this loop only shows the model learning on a laptop in a minute or two, through the same
``train_step``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoints import save_generator
from .constants import FusionInit
from .fuse import load_pair
from .losses import MS_SSIM_MIN_SIDE, LossWeights
from .pairs import ImagePair
from .step import build_networks, build_optimizers, recalibrate_batchnorm, train_step


@dataclass(frozen=True)
class QuickTrainConfig:
    steps: int = 120
    batch_size: int = 8
    patch: int = 176  # > 160 for MS-SSIM
    lr: float = 0.01  # the release's; at 0.001 (or 0.003) a short run fuses into a dark image
    recalibration_batches: int = 8  # BatchNorm statistics re-estimated on the fusion path at the end
    seed: int = 0
    # The fusion head starts as the sum of its weighted sources (dwsfusion.model.init): from the
    # release's random start, 200 steps fuse the sample scenes below mean fusion's VIF.
    fusion_init: FusionInit = "sum"
    # The critics' weight. 0, as in configs/reproduce.yaml: the release's nominal 0.1 on our trained
    # critic head pulls away from the content term (docs/fidelity.md), and the step without the
    # critics is about 1.6x faster.
    adversarial: float = 0.0


def random_patches(
    sources: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, batch: int, patch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    irs, vis = [], []
    for _ in range(batch):
        ir, vi = sources[rng.integers(len(sources))]
        y = int(rng.integers(0, ir.shape[0] - patch + 1))
        x = int(rng.integers(0, ir.shape[1] - patch + 1))
        irs.append(ir[y : y + patch, x : x + patch])
        vis.append(vi[y : y + patch, x : x + patch])
    return torch.from_numpy(np.stack(irs))[:, None], torch.from_numpy(np.stack(vis))[:, None]


def quick_train(
    pairs: list[ImagePair],
    checkpoint: str | os.PathLike,
    config: QuickTrainConfig = QuickTrainConfig(),
    progress: bool = True,
) -> tuple[Path, list[dict[str, float]]]:
    """Train from scratch on random crops of ``pairs``; returns (checkpoint, per-step losses)."""
    if config.patch < MS_SSIM_MIN_SIDE:
        raise ValueError(f"patch {config.patch} too small: MS-SSIM needs > 160 px per side")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sources = []
    for pair in pairs:
        src = load_pair(pair)
        if min(src.ir.shape) >= config.patch:
            sources.append((src.ir, src.vis_y))
    if not sources:
        raise ValueError(f"no pair is at least {config.patch} px per side")
    nets = build_networks(fusion_init=config.fusion_init)
    optimizers = build_optimizers(nets, config.lr, config.lr)
    weights = LossWeights(adversarial=config.adversarial)
    history = []
    bar = tqdm(range(config.steps), desc="train", unit="step", disable=not progress)
    for _ in bar:
        ir, vi = random_patches(sources, rng, config.batch_size, config.patch)
        logs = train_step(nets, optimizers, ir, vi, weights)
        history.append(logs)
        bar.set_postfix(g=f"{logs['g_total']:.3f}", content=f"{logs['g_content']:.3f}")
    if config.recalibration_batches:
        count, size = config.recalibration_batches, config.batch_size
        recalibrate_batchnorm(nets.generator, [random_patches(sources, rng, size, config.patch) for _ in range(count)])
    nets.generator.eval()
    path = save_generator(nets.generator, checkpoint, meta={"source": "quick_train", **config.__dict__})
    return path, history
