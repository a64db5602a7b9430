"""Training-time augmentation of aligned infrared/visible patch pairs.

The fusion target, max(ir, vi) and its gradients, is computed from whatever pair the generator
sees, so any change to a pair is a new, equally valid example. Two are used:

- flips, horizontal and vertical, the same for both images of a pair (they stay aligned);
- a random gamma per image and modality (x -> x ** g, g log-uniform in ``gamma``): it keeps 0
  and 1 and the order of intensities within an image, but changes which modality is brighter
  where. That is what a small training set fixes the generator to: 41 RoadScene pairs show it
  few of the ir/vi intensity relations of other sets (TNO), and max(ir, vi) must hold for all.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def augment_pairs(
    ir: Tensor, vi: Tensor, generator: torch.Generator | None = None, gamma: tuple[float, float] = (0.5, 2.0)
) -> tuple[Tensor, Tensor]:
    """ir, vi: (B, 1, H, W) floats in [0, 1] -> the same shapes, each pair flipped and re-gammaed."""
    batch = ir.shape[0]
    # drawn on the CPU (a seeded CPU generator gives the same draws for any device), then moved
    draws = torch.rand(4, batch, 1, 1, 1, generator=generator).to(ir.device)  # flip x, flip y, gamma ir, vi
    flip_x, flip_y = draws[0] < 0.5, draws[1] < 0.5
    ir = torch.where(flip_x, ir.flip(-1), ir)
    vi = torch.where(flip_x, vi.flip(-1), vi)
    ir = torch.where(flip_y, ir.flip(-2), ir)
    vi = torch.where(flip_y, vi.flip(-2), vi)
    low, high = math.log(gamma[0]), math.log(gamma[1])
    gamma_ir, gamma_vi = (torch.exp(low + (high - low) * draws[k]) for k in (2, 3))  # (B, 1, 1, 1)
    # clamp: x ** g has an infinite slope at 0 for g < 1, and autograd never needs it here
    return ir.clamp(0, 1).pow(gamma_ir.to(ir.dtype)), vi.clamp(0, 1).pow(gamma_vi.to(vi.dtype))


def add_visible_noise(vi: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """vi: (B, 1, H, W) floats in [0, 1] -> the same with Gaussian pixel noise of ``sigma`` grey
    levels (of 255) added, clamped to [0, 1].

    Why: the visible images of a small, clean training set (RoadScene at 0.6: Immerkaer noise
    estimate 0.89 grey levels, examples/noise_levels.py) carry less pixel-level detail than those
    the model is scored on (TNO: 1.97), so the generator learns to smooth what TNO's visible
    images hold at the finest scale. With noise on the visible input the target max(ir, vi) and
    its gradients hold that detail too, and passing it through is what the content loss rewards.
    The infrared side needs none (RoadScene's IR at 0.6: 1.51 against TNO's 0.90).
    """
    # drawn on the CPU (a seeded CPU generator gives the same draws for any device), then moved
    noise = torch.randn(vi.shape, generator=generator).to(device=vi.device, dtype=vi.dtype)
    return (vi + noise * (sigma / 255.0)).clamp(0, 1)
