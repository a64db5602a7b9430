"""Every loss term against the formulas of ../shared/spec/dwsfusion.md ("Losses (release
defaults)"), each recomputed here independently on fixed tensors: NumPy for the pixel terms,
closed-form critics for the adversarial and gradient-penalty terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim

from dwsfusion.losses import LossWeights, content_losses, critic_losses, dual_weight_losses, generator_losses
from dwsfusion.model import GeneratorOutput

B, H, W = 3, 176, 184


def _fixed(seed: int, *shape) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape)).float()


def _sobel_np(x: np.ndarray) -> np.ndarray:
    """|Sobel_x| + |Sobel_y| with zero padding, as shifted sums of a (H, W) float64 image."""
    p = np.pad(x, 1)
    at = lambda dy, dx: p[1 + dy : 1 + dy + x.shape[0], 1 + dx : 1 + dx + x.shape[1]]  # noqa: E731
    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1)) - (at(1, -1) + 2 * at(1, 0) + at(1, 1))
    return np.abs(gx) + np.abs(gy)


def test_content_term_is_l1_intensity_plus_l1_gradient_plus_one_minus_ms_ssim():
    ir, vi, fused = _fixed(0, B, 1, H, W), _fixed(1, B, 1, H, W), _fixed(2, B, 1, H, W)
    a, b, f = (t.double().numpy()[:, 0] for t in (ir, vi, fused))
    target = np.maximum(a, b)
    intensity = np.abs(f - target).mean()
    gradient = np.mean([np.abs(_sobel_np(f[i]) - np.maximum(_sobel_np(a[i]), _sobel_np(b[i]))) for i in range(B)])
    # pytorch-msssim, data range 1, 5 scales, window 11, the batch mean (the spec's definition)
    ms = ms_ssim(fused, torch.maximum(ir, vi), data_range=1.0, size_average=True).item()
    terms = content_losses(fused, ir, vi)
    assert terms["intensity"].item() == pytest.approx(intensity, rel=1e-5)
    assert terms["gradient"].item() == pytest.approx(gradient, rel=1e-5)
    assert terms["ms_ssim"].item() == pytest.approx(1 - ms, rel=1e-5)


def _output(seed: int) -> GeneratorOutput:
    maps = [_fixed(seed + i, B, 1, 32, 40) for i in range(7)]
    return GeneratorOutput(*maps)


def test_dual_weight_terms_and_their_weights():
    out = _output(10)
    w_ir, w_vi, f_ir, f_vi = (t.double().numpy() for t in (out.w_ir, out.w_vi, out.f_ir, out.f_vi))
    terms = dual_weight_losses(out)
    assert terms["dual_ir"].item() == pytest.approx(np.abs(w_ir - f_ir).mean(), rel=1e-6)
    assert terms["dual_vi"].item() == pytest.approx(np.abs(w_vi - f_vi).mean(), rel=1e-6)
    assert terms["dual_cross"].item() == pytest.approx(np.abs(w_ir - (1 - w_vi)).mean(), rel=1e-6)


class QuadraticCritic(torch.nn.Module):
    """D(x) = sum(c * x^2) per sample: the gradient is 2 c x, known in closed form."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.c * x**2).flatten(1).sum(1, keepdim=True)


def test_generator_total_is_ten_content_plus_dual_weight_plus_a_tenth_adversarial():
    ir, vi = _fixed(20, B, 1, H, W), _fixed(21, B, 1, H, W)
    out = GeneratorOutput(_fixed(22, B, 1, H, W), *(_fixed(23 + i, B, 1, H, W) for i in range(6)))
    weights = LossWeights(dual_ir=0.5, dual_vi=2.0, dual_cross=3.0)
    d_ir, d_vi = QuadraticCritic(0.01), QuadraticCritic(-0.02)
    terms = generator_losses(out, ir, vi, d_ir, d_vi, weights)
    f = out.fused.double().numpy()
    adversarial = -(0.01 * f**2).reshape(B, -1).sum(1).mean() - (-0.02 * f**2).reshape(B, -1).sum(1).mean()
    assert terms["adversarial"].item() == pytest.approx(adversarial, rel=1e-5)
    content = content_losses(out.fused, ir, vi)
    dual = dual_weight_losses(out)
    expected = (
        10 * (content["intensity"] + content["gradient"] + content["ms_ssim"]).item()
        + 0.5 * dual["dual_ir"].item()
        + 2.0 * dual["dual_vi"].item()
        + 3.0 * dual["dual_cross"].item()
        + 0.1 * adversarial
    )
    assert terms["total"].item() == pytest.approx(expected, rel=1e-5)


def test_critic_loss_is_wasserstein_plus_ten_gradient_penalties():
    real, fake = _fixed(30, B, 1, 24, 20), _fixed(31, B, 1, 24, 20)
    c = 0.05
    torch.manual_seed(7)
    eps = torch.rand(B, 1, 1, 1).double().numpy()  # the interpolation weights the penalty draws
    torch.manual_seed(7)
    terms = critic_losses(QuadraticCritic(c), real, fake, gp_weight=10.0)
    r, f = real.double().numpy(), fake.double().numpy()
    mixed = eps * r + (1 - eps) * f
    norms = np.sqrt(((2 * c * mixed) ** 2).reshape(B, -1).sum(1))  # ||grad_x D|| = ||2 c x||
    penalty = np.mean((norms - 1) ** 2)
    wasserstein = (c * f**2).reshape(B, -1).sum(1).mean() - (c * r**2).reshape(B, -1).sum(1).mean()
    assert terms["gp"].item() == pytest.approx(penalty, rel=1e-5)
    assert terms["wasserstein"].item() == pytest.approx(wasserstein, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(wasserstein + 10 * penalty, rel=1e-5)


def test_the_scaled_penalty_of_amp_gives_the_same_loss_and_gradients():
    """With fp16 a GradScaler scales the critic's score before the inner gradient and unscales
    it after (PyTorch's AMP recipe); in float32 the result must equal the unscaled penalty."""
    real, fake = _fixed(40, B, 1, 24, 20), _fixed(41, B, 1, 24, 20)
    critic = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    critic(real)  # materialise the lazy layer
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    results = []
    for amp in (None, scaler):
        torch.manual_seed(3)
        loss = critic_losses(critic, real, fake, 10.0, amp)["loss"]
        grads = torch.autograd.grad(loss, list(critic.parameters()))
        results.append((loss, grads))
    (loss, grads), (scaled_loss, scaled_grads) = results
    torch.testing.assert_close(scaled_loss, loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(scaled_grads, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
