"""The IVIF metric suite in torch: the same 14 metrics and conventions as ``dwsfusion.metrics``
(the NumPy suite, which reproduces the authors' tables), on any device, so a fuser on a GPU
scores its output where it made it. Values agree with the NumPy suite within 1e-4 relative
(``tests/unit/test_metrics.py``; in float64 they agree to ~1e-12).

Inputs are 8-bit gray images (H, W): NumPy arrays or tensors, any integer or float dtype with
values in [0, 255]. The work runs in ``dtype`` (float64 by default; float32 is faster on GPUs
and stays within 1e-4 for these metrics, except MI, EN and the histogram-based ones, which are
computed from integer counts in any case).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from .constants import METRIC_NAMES

_EPS = 1e-8


def _gaussian_1d(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, kernel_1d: torch.Tensor) -> torch.Tensor:
    """'valid' filtering with the separable window outer(k, k): (H, W) -> (H-n+1, W-n+1)."""
    n = kernel_1d.numel()
    out = F.conv2d(x[None, None], kernel_1d.view(1, 1, n, 1))
    return F.conv2d(out, kernel_1d.view(1, 1, 1, n))[0, 0]


def _correlate_same(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Same-size 3x3 correlation; ``mode`` 'zeros' or 'reflect' (OpenCV's reflect-101)."""
    padded = F.pad(x[None, None], (1, 1, 1, 1), mode="constant" if mode == "zeros" else mode)
    return F.conv2d(padded, kernel.view(1, 1, 3, 3))[0, 0]


def entropy(f: torch.Tensor) -> float:
    # np.histogram(bins=256, range=(0, 255)) of 8-bit values: bin floor(v * 256 / 255), 255 in the last
    bins = torch.clamp(torch.floor(f * (256 / 255)), max=255).long()
    p = torch.bincount(bins.flatten(), minlength=256).double() / f.numel()
    return float(-(p * torch.log2(p + 1e-7)).sum())


def standard_deviation(f: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((f - f.mean()) ** 2)))


def spatial_frequency(f: torch.Tensor) -> float:
    rf = torch.mean(torch.diff(f, dim=0) ** 2)
    cf = torch.mean(torch.diff(f, dim=1) ** 2)
    return float(torch.sqrt(rf + cf))


def average_gradient(f: torch.Tensor) -> float:
    gy, gx = torch.gradient(f)  # central differences inside, one-sided at the borders (np.gradient)
    s = torch.sqrt((gx**2 + gy**2) / 2)
    return float(s.sum() / ((f.shape[0] - 1) * (f.shape[1] - 1)))


def _plogp(p: torch.Tensor) -> torch.Tensor:
    p = p[p > 0]
    return (p * torch.log2(p)).sum()


def _mutual_information(a: torch.Tensor, f: torch.Tensor) -> float:
    joint = torch.bincount((a.long() * 256 + f.long()).flatten(), minlength=65536).double()
    joint = joint.view(256, 256) / a.numel()
    return float(_plogp(joint) - _plogp(joint.sum(dim=1)) - _plogp(joint.sum(dim=0)))


def mutual_information(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    return _mutual_information(a, f) + _mutual_information(b, f)


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float(torch.sum(x * y) / torch.sqrt(torch.sum(x * x) * torch.sum(y * y)))  # NaN if constant


def scd(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    return _corr(f - b, a) + _corr(f - a, b)


def correlation_coefficient(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    fc = f - f.mean()

    def r(x: torch.Tensor) -> float:
        xc = x - x.mean()
        return float(torch.sum(xc * fc) / (torch.sqrt(torch.sum(xc**2) * torch.sum(fc**2)) + _EPS))

    return (r(a) + r(b)) / 2


def _vif_pixel_multiscale(ref: torch.Tensor, dist: torch.Tensor, sigma_nsq: float = 2.0) -> float:
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian_1d(n, n / 5, ref)
        if scale > 1:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        sigma1_sq = torch.clamp(_filter_valid(ref * ref, win) - mu1 * mu1, min=0)
        sigma2_sq = torch.clamp(_filter_valid(dist * dist, win) - mu2 * mu2, min=0)
        sigma12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = sigma12 / (sigma1_sq + 1e-10)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < 1e-10
        g, sv_sq = g.masked_fill(flat_ref, 0), torch.where(flat_ref, sigma2_sq, sv_sq)
        sigma1_sq = sigma1_sq.masked_fill(flat_ref, 0)
        flat_dist = sigma2_sq < 1e-10
        g, sv_sq = g.masked_fill(flat_dist, 0), sv_sq.masked_fill(flat_dist, 0)
        negative = g < 0
        sv_sq, g = torch.where(negative, sigma2_sq, sv_sq), g.masked_fill(negative, 0)
        sv_sq = torch.clamp(sv_sq, min=1e-10)
        num += float(torch.log10(1 + g**2 * sigma1_sq / (sv_sq + sigma_nsq)).sum())
        den += float(torch.log10(1 + sigma1_sq / sigma_nsq).sum())
    return num / den


def vif(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    return _vif_pixel_multiscale(a, f) + _vif_pixel_multiscale(b, f)


def qabf(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    """Xydeas-Petrovic edge preservation (Sobel, zero border)."""
    tg, kg, dg, ta, ka, da = 0.9994, -15, 0.5, 0.9879, -22, 0.8
    sobel = torch.tensor([[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]], dtype=f.dtype)
    sobel = sobel.to(f.device)

    def strength_angle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sx, sy = _correlate_same(x, sobel[0], "zeros"), _correlate_same(x, sobel[1], "zeros")
        angle = torch.where(sx == 0, math.pi / 2, torch.atan(sy / torch.where(sx == 0, 1.0, sx)))
        return torch.hypot(sx, sy), angle

    (ga, aa), (gb, ab), (gf, af) = strength_angle(a), strength_angle(b), strength_angle(f)

    def preservation(gs: torch.Tensor, as_: torch.Tensor) -> torch.Tensor:
        g = torch.where(gs > gf, gf / (gs + _EPS), torch.where(gs == gf, gf, gs / (gf + _EPS)))
        orientation = 1 - torch.abs(as_ - af) / (math.pi / 2)
        return tg / (1 + torch.exp(kg * (g - dg))) * ta / (1 + torch.exp(ka * (orientation - da)))

    return float(torch.sum(preservation(ga, aa) * ga + preservation(gb, ab) * gb) / torch.sum(ga + gb))


def nabf(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    """Fusion artefacts N_abf (Petrovic, modified by B. K. Shreyamsha Kumar)."""
    td, lg, nrg, kg, sg, nra, ka, sa = 2, 1.5, 0.9999, 19, 0.5, 0.9995, 22, 0.5
    # The reference convolves (kernel flipped) after a reflect-101 extension by one pixel.
    vtemp = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=f.dtype).flip(0, 1).to(f.device) / 8
    htemp = torch.tensor([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=f.dtype).flip(0, 1).to(f.device) / 8

    def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gv, gh = _correlate_same(x, vtemp, "reflect"), _correlate_same(x, htemp, "reflect")
        angle = torch.where((gv == 0) & (gh == 0), 0.0, torch.atan(gv / (gh + _EPS)))
        return torch.sqrt(gh**2 + gv**2), angle

    (ga, aa), (gb, ab), (gf, af) = sobel(a), sobel(b), sobel(f)

    def preservation(gs: torch.Tensor, as_: torch.Tensor) -> torch.Tensor:
        rel = torch.where(gs > gf, gf / (gs + _EPS), gs / (gf + _EPS)).masked_fill((gs == 0) | (gf == 0), 0.0)
        ang = torch.abs(torch.abs(as_ - af) - math.pi / 2) * 2 / math.pi
        qg = nrg / (1 + torch.exp(-kg * (rel - sg)))
        qa = nra / (1 + torch.exp(-ka * (ang - sa)))
        return torch.sqrt(qg * qa)

    qaf, qbf = preservation(ga, aa), preservation(gb, ab)
    wa = torch.where(ga >= td, ga**lg, 0.0)
    wb = torch.where(gb >= td, gb**lg, 0.0)
    artefact = (gf > ga) & (gf > gb)
    return float(torch.sum(artefact * ((1 - qaf) * wa + (1 - qbf) * wb)) / torch.sum(wa + wb))


def _ssim_valid(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> float:
    win = _gaussian_1d(11, 1.5, x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu1, mu2 = _filter_valid(x, win), _filter_valid(y, win)
    s11 = _filter_valid(x * x, win) - mu1 * mu1
    s22 = _filter_valid(y * y, win) - mu2 * mu2
    s12 = _filter_valid(x * y, win) - mu1 * mu2
    ssim_map = (2 * mu1 * mu2 + c1) * (2 * s12 + c2) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


def ssim(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    return (_ssim_valid(a, f) + _ssim_valid(b, f)) / 2


def multiscale_ssim(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    if min(f.shape) <= 160:
        return float("nan")
    # float32 on the CPU, as the NumPy suite feeds pytorch-msssim. On a GPU float64: cuDNN runs
    # float32 convolutions in TF32 by default (a 10-bit mantissa), which moved MS-SSIM by
    # 1.3e-4 relative on an H100; float64 stays within 1e-6 of the float32 CPU value.
    dtype = torch.float32 if f.device.type == "cpu" else torch.float64
    x, y, ft = (t.to(dtype)[None, None] for t in (a, b, f))
    return float((ms_ssim(x, ft, data_range=255) + ms_ssim(y, ft, data_range=255)) / 2)


def mse(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    a, b, f = a / 255, b / 255, f / 255
    return float((torch.mean((f - a) ** 2) + torch.mean((f - b) ** 2)) / 2)


def psnr(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> float:
    value = mse(a, b, f)
    return float("inf") if value == 0 else 20 * math.log10(255 / math.sqrt(value))


_SINGLE = {"EN": entropy, "SD": standard_deviation, "SF": spatial_frequency, "AG": average_gradient}
_REFERENCED = {
    "MI": mutual_information,
    "SCD": scd,
    "CC": correlation_coefficient,
    "VIF": vif,
    "Qabf": qabf,
    "Nabf": nabf,
    "SSIM": ssim,
    "MS-SSIM": multiscale_ssim,
    "PSNR": psnr,
    "MSE": mse,
}


def _as_tensor(image, device, dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    return tensor.to(device=device, dtype=dtype)


@torch.no_grad()
def compute_metrics(
    ir,
    vi,
    fused,
    names: tuple[str, ...] = METRIC_NAMES,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict[str, float]:
    """All metrics (or ``names``) for one triple of 8-bit gray images (H, W), on ``device``
    (default: where ``fused`` is, or the CPU for arrays)."""
    if not (tuple(ir.shape) == tuple(vi.shape) == tuple(fused.shape)) or len(ir.shape) != 2:
        raise ValueError(f"metrics need three gray images of one size, got {ir.shape}, {vi.shape}, {fused.shape}")
    device = device or (fused.device if isinstance(fused, torch.Tensor) else "cpu")
    a, b, f = (_as_tensor(x, device, dtype) for x in (ir, vi, fused))
    out = {}
    for name in names:
        if name in _SINGLE:
            out[name] = _SINGLE[name](f)
        elif name in _REFERENCED:
            out[name] = _REFERENCED[name](a, b, f)
        else:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
    return out
