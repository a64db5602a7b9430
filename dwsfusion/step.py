"""One adversarial training step (D_ir, D_vi, then G) on a batch; free of Ray.

Every trainer (single process, Ray Train DDP, Ray Tune) calls ``train_step``. Distributed
callers pass ``sync_gradients`` (e.g. an all-reduce average) which runs after each backward
and before each optimiser step; the discriminators are used unwrapped and frozen in the
generator step, so their gradients come only from their own step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .constants import AlphaInit, FusionInit
from .losses import LossWeights, critic_losses, generator_losses
from .model import Discriminator, Generator, GeneratorConfig, initialise


@dataclass
class Networks:
    generator: nn.Module
    d_ir: nn.Module
    d_vi: nn.Module

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "d_ir": self.d_ir, "d_vi": self.d_vi}


@dataclass
class Optimizers:
    generator: torch.optim.Optimizer
    d_ir: torch.optim.Optimizer
    d_vi: torch.optim.Optimizer


def build_networks(
    config: GeneratorConfig | None = None,
    fusion_init: FusionInit = "sum",
    seed: int | None = None,
    alpha_init: AlphaInit = "release",
) -> Networks:
    """Fresh networks for training from scratch; ``fusion_init`` is where the generator's fusion
        head starts (``dwsfusion.model.init``: "sum" of its weighted sources, or the "release"'s
        default initialisation); ``alpha_init`` where its AlphaNet starts ("release": random, "alive":
    one fixed alpha); ``seed`` seeds torch first, so that the same seed is the same start."""
    if seed is not None:
        torch.manual_seed(seed)
    return Networks(initialise(Generator(config), fusion_init, alpha_init), Discriminator(), Discriminator())


def build_optimizers(nets: Networks, lr_g: float = 0.01, lr_d: float = 0.01) -> Optimizers:
    """The release's choice: Adam for G, RMSprop for both discriminators. Adam runs fused (one
    kernel over all parameters) on the CPU and CUDA: the same update, without the multi-tensor
    form's per-step scalar conversions (measured on this 2-core box, one thread: the generator's
    Adam step 10.5 ms -> 2.2 ms, about 1 % of a step at batch 8, 176²). RMSprop has no fused form."""
    device = next(nets.generator.parameters()).device.type
    return Optimizers(
        torch.optim.Adam(nets.generator.parameters(), lr=lr_g, fused=True if device in ("cpu", "cuda") else None),
        torch.optim.RMSprop(nets.d_ir.parameters(), lr=lr_d),
        torch.optim.RMSprop(nets.d_vi.parameters(), lr=lr_d),
    )


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(module, "module", module)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _no_sync(_: nn.Module) -> None:
    return None


def _apply(
    loss: torch.Tensor,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    sync_gradients: Callable[[nn.Module], None],
    grad_clip: float | None,
    scaler: torch.amp.GradScaler | None,
) -> None:
    optimizer.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    sync_gradients(module)  # scaled gradients average as well: every rank has the same scale
    if scaler is None:
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
        optimizer.step()
        return
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    scaler.step(optimizer)  # skipped when a gradient is inf/NaN; the scale then shrinks


def critic_updates(weights: LossWeights, critic_steps: int | None = None) -> int:
    """Updates of each critic per generator step: ``critic_steps`` when given, else the
    release's 1 with an adversarial term and 0 without (no term: the critics are not run)."""
    if critic_steps is not None:
        return critic_steps
    return 1 if weights.adversarial else 0


def train_step(
    nets: Networks,
    optimizers: Optimizers,
    ir: torch.Tensor,
    vi: torch.Tensor,
    weights: LossWeights = LossWeights(),
    sync_gradients: Callable[[nn.Module], None] = _no_sync,
    grad_clip: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    critic_steps: int | None = None,
) -> dict[str, float]:
    """One step of the release's schedule. ir, vi: (B, 1, H, W) in [0, 1], H, W > 160.
    Returns every loss term as a float (generator terms, then ``d_ir_*``, ``d_vi_*``, the
    critics' last update). ``critic_steps``: updates of each critic on this batch before the
    generator's (fresh penalty interpolates each time; WGAN-GP's n_critic); None: 1 with an
    adversarial term, 0 without. With ``weights.adversarial == 0`` and no ``critic_steps`` the
    critics are neither run nor trained (no ``d_*`` terms): the generator step alone, about 1.6x
    faster (docs/fidelity.md on why a recipe sets it); with ``critic_steps`` they train while the
    generator does not see them yet (a warm-up).
    Under fp16 autocast pass a ``torch.amp.GradScaler``: it scales all three backward passes
    and the penalty's inner gradient, and is updated once per step. The loss values are
    read back once, at the end (one device sync per step, not one per term)."""
    critic_steps = critic_updates(weights, critic_steps)
    out = nets.generator(ir, vi)
    terms: dict[str, torch.Tensor] = {}
    fake = out.fused.detach()
    for _ in range(critic_steps):
        for name, critic, real in (("d_ir", nets.d_ir, ir), ("d_vi", nets.d_vi, vi)):
            critic_terms = critic_losses(critic, real, fake, weights.gradient_penalty, scaler)
            _apply(critic_terms["loss"], critic, getattr(optimizers, name), sync_gradients, grad_clip, scaler)
            terms.update({f"{name}_{k}": v.detach() for k, v in critic_terms.items()})
    d_ir, d_vi = unwrap(nets.d_ir), unwrap(nets.d_vi)
    with frozen(d_ir), frozen(d_vi):  # the updated critics judge, but are not trained here
        generator_terms = generator_losses(out, ir, vi, d_ir, d_vi, weights)
        _apply(generator_terms["total"], nets.generator, optimizers.generator, sync_gradients, grad_clip, scaler)
    if scaler is not None:
        scaler.update()
    terms.update({f"g_{k}": v.detach() for k, v in generator_terms.items()})
    values = torch.stack([v.float() for v in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Re-estimate the generator's BatchNorm running statistics on the inference path.

    Training leaves them unfit for fusion twice over: each step runs the weight nets on the
    sources and again on the fused image (F_ir, F_vi), so the statistics mix two
    distributions where fusion sees one; and momentum 0.1 makes them follow the last few
    batches, so a checkpoint's eval-mode output swings from one epoch to the next (measured:
    TNO Qabf 0.44 with the running statistics at step 400, 0.50 after this). Here they are
    reset and accumulated as a plain average (momentum None) over ``batches`` of (ir, vi),
    (B, 1, H, W) in [0, 1], through ``generator.fuse`` only; the weights do not change.
    Returns the number of batches used."""
    batches = list(batches)
    if not batches:
        raise ValueError("recalibrate_batchnorm needs at least one batch")
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = generator.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average
    generator.train()
    try:
        for ir, vi in batches:
            unwrap(generator).fuse(ir, vi)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        generator.train(was_training)
    return len(batches)
