"""One adversarial training step (D_ir, D_vi, then G) on a batch; free of Ray.

Every trainer (single process, Ray Train DDP, Ray Tune) calls ``train_step``. Distributed
callers pass ``sync_gradients`` (e.g. an all-reduce average) which runs after each backward
and before each optimiser step; the discriminators are used unwrapped and frozen in the
generator step, so their gradients come only from their own step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .losses import LossWeights, critic_losses, generator_losses
from .model import Discriminator, Generator, GeneratorConfig


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


def build_networks(config: GeneratorConfig | None = None) -> Networks:
    return Networks(Generator(config), Discriminator(), Discriminator())


def build_optimizers(nets: Networks, lr_g: float = 0.01, lr_d: float = 0.01) -> Optimizers:
    """The release's choice: Adam for G, RMSprop for both discriminators."""
    return Optimizers(
        torch.optim.Adam(nets.generator.parameters(), lr=lr_g),
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
) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync_gradients(module)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()


def train_step(
    nets: Networks,
    optimizers: Optimizers,
    ir: torch.Tensor,
    vi: torch.Tensor,
    weights: LossWeights = LossWeights(),
    sync_gradients: Callable[[nn.Module], None] = _no_sync,
    grad_clip: float | None = None,
) -> dict[str, float]:
    """One step of the release's schedule. ir, vi: (B, 1, H, W) in [0, 1], H, W > 160.
    Returns every loss term as a float (generator terms, then ``d_ir_*``, ``d_vi_*``)."""
    out = nets.generator(ir, vi)
    fake = out.fused.detach()
    logs: dict[str, float] = {}
    for name, critic, real in (("d_ir", nets.d_ir, ir), ("d_vi", nets.d_vi, vi)):
        terms = critic_losses(critic, real, fake, weights.gradient_penalty)
        _apply(terms["loss"], critic, getattr(optimizers, name), sync_gradients, grad_clip)
        logs.update({f"{name}_{k}": v.item() for k, v in terms.items()})
    d_ir, d_vi = unwrap(nets.d_ir), unwrap(nets.d_vi)
    with frozen(d_ir), frozen(d_vi):  # the updated critics judge, but are not trained here
        terms = generator_losses(out, ir, vi, d_ir, d_vi, weights)
        _apply(terms["total"], nets.generator, optimizers.generator, sync_gradients, grad_clip)
    logs.update({f"g_{k}": v.item() for k, v in terms.items()})
    return logs
