"""The standard IVIF metric suite, vectorised, with the convention of the authors' tables.

Every metric takes 8-bit gray images (H, W) as float64 in [0, 255]: ``ir`` (A), ``vi`` (B)
and ``fused`` (F). Conventions are the ones most IVIF papers' Python/Matlab code use, and
the DWSFusion authors' (their per-image tables are reproduced in the tests):
EN uses ``np.histogram(bins=256, range=(0, 255))``; MI, VIF, SSIM and MS-SSIM add or average
both sources; PSNR = 20 log10(255 / sqrt(MSE)) with MSE the mean of both MSEs on [0, 1]
images; Qabf keeps the reference code's G = gF where gA == gF; SSIM is the valid-region
Gaussian SSIM (window 11, sigma 1.5, data range 255). MS-SSIM (pytorch-msssim, 5 scales)
needs both sides > 160 px and is NaN below that.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import torch
from pytorch_msssim import ms_ssim

from .allocator import keep_freed_memory
from .constants import METRIC_NAMES

keep_freed_memory()  # the first pair as fast as the next (dwsfusion.allocator)

_EPS = 1e-8


def _correlate(image: np.ndarray, kernel: np.ndarray, border: int) -> np.ndarray:
    """Same-size 2-D correlation in float64 (OpenCV), with the given border rule."""
    return cv2.filter2D(image, cv2.CV_64F, np.asarray(kernel, np.float64), borderType=border)


def _filter_valid(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """'valid' filtering with a separable symmetric kernel (outer(k, k)), as scipy's
    ``convolve2d(image, outer(k, k), mode='valid')``."""
    r = kernel_1d.size // 2
    out = cv2.sepFilter2D(image, cv2.CV_64F, kernel_1d, kernel_1d, borderType=cv2.BORDER_CONSTANT)
    return out[r : image.shape[0] - r, r : image.shape[1] - r]


def entropy(f: np.ndarray) -> float:
    hist, _ = np.histogram(f, bins=256, range=(0, 255))
    p = hist / hist.sum()
    return float(-np.sum(p * np.log2(p + 1e-7)))


def standard_deviation(f: np.ndarray) -> float:
    return float(np.sqrt(np.mean((f - f.mean()) ** 2)))


def spatial_frequency(f: np.ndarray) -> float:
    rf = np.mean(np.diff(f, axis=0) ** 2)
    cf = np.mean(np.diff(f, axis=1) ** 2)
    return float(np.sqrt(rf + cf))


def average_gradient(f: np.ndarray) -> float:
    gy, gx = np.gradient(f)
    s = np.sqrt((gx**2 + gy**2) / 2)
    return float(s.sum() / ((f.shape[0] - 1) * (f.shape[1] - 1)))


def _mutual_information(a: np.ndarray, f: np.ndarray) -> float:
    joint = np.bincount((a.astype(np.int64) * 256 + f.astype(np.int64)).ravel(), minlength=65536)
    joint = joint.reshape(256, 256) / a.size
    pa, pf = joint.sum(axis=1), joint.sum(axis=0)

    def plogp(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(np.sum(p * np.log2(p)))

    return plogp(joint) - plogp(pa) - plogp(pf)


def mutual_information(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    return _mutual_information(a, f) + _mutual_information(b, f)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN for a constant image, as the reference
        return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    return _corr(f - b, a) + _corr(f - a, b)


def correlation_coefficient(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    def r(x: np.ndarray) -> float:
        xc, fc = x - x.mean(), f - f.mean()
        return float(np.sum(xc * fc) / (np.sqrt(np.sum(xc**2) * np.sum(fc**2)) + _EPS))

    return (r(a) + r(b)) / 2


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's fspecial('gaussian', size, sigma): the 2-D window is exactly
    outer(g, g) here (its eps cut-off never bites for the sizes used)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def vif_scales(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> tuple[list[float], list[float]]:
    """Pixel VIF of ``dist`` against ``ref`` per scale, finest first: (numerators, denominators),
    each a sum of log10 terms over that scale's pixels; VIF is sum(num) / sum(den). A scale's
    num / den says how much of the reference's information at that scale the image keeps."""
    nums, dens = [], []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian_1d(n, n / 5)
        if scale > 1:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        sigma1_sq = np.maximum(_filter_valid(ref * ref, win) - mu1 * mu1, 0)
        sigma2_sq = np.maximum(_filter_valid(dist * dist, win) - mu2 * mu2, 0)
        sigma12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = sigma12 / (sigma1_sq + 1e-10)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < 1e-10
        g[flat_ref], sv_sq[flat_ref], sigma1_sq[flat_ref] = 0, sigma2_sq[flat_ref], 0
        flat_dist = sigma2_sq < 1e-10
        g[flat_dist], sv_sq[flat_dist] = 0, 0
        negative = g < 0
        sv_sq[negative], g[negative] = sigma2_sq[negative], 0
        sv_sq = np.maximum(sv_sq, 1e-10)
        nums.append(float(np.sum(np.log10(1 + g**2 * sigma1_sq / (sv_sq + sigma_nsq)))))
        dens.append(float(np.sum(np.log10(1 + sigma1_sq / sigma_nsq))))
    return nums, dens


def _vif_pixel_multiscale(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    nums, dens = vif_scales(ref, dist, sigma_nsq)
    return float(sum(nums) / sum(dens))


def vif(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    return _vif_pixel_multiscale(a, f) + _vif_pixel_multiscale(b, f)


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
_SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64)


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Xydeas-Petrovic edge preservation (Sobel, zero border)."""
    tg, kg, dg, ta, ka, da = 0.9994, -15, 0.5, 0.9879, -22, 0.8

    def strength_angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx = _correlate(x, _SOBEL_X, cv2.BORDER_CONSTANT)
        sy = _correlate(x, _SOBEL_Y, cv2.BORDER_CONSTANT)
        with np.errstate(divide="ignore", invalid="ignore"):
            angle = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1, sx)))
        return np.hypot(sx, sy), angle

    (ga, aa), (gb, ab), (gf, af) = strength_angle(a), strength_angle(b), strength_angle(f)

    def preservation(gs: np.ndarray, as_: np.ndarray) -> np.ndarray:
        g = np.where(gs > gf, gf / (gs + _EPS), np.where(gs == gf, gf, gs / (gf + _EPS)))
        orientation = 1 - np.abs(as_ - af) / (math.pi / 2)
        return tg / (1 + np.exp(kg * (g - dg))) * ta / (1 + np.exp(ka * (orientation - da)))

    return float(np.sum(preservation(ga, aa) * ga + preservation(gb, ab) * gb) / np.sum(ga + gb))


def nabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Fusion artefacts N_abf (Petrovic, modified by B. K. Shreyamsha Kumar)."""
    td, lg, nrg, kg, sg, nra, ka, sa = 2, 1.5, 0.9999, 19, 0.5, 0.9995, 22, 0.5
    # The reference convolves (kernel flipped) after a reflect-101 extension by one pixel.
    vtemp = np.flip(np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64) / 8)
    htemp = np.flip(np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64) / 8)

    def sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gv = _correlate(x, vtemp, cv2.BORDER_REFLECT_101)
        gh = _correlate(x, htemp, cv2.BORDER_REFLECT_101)
        angle = np.where((gv == 0) & (gh == 0), 0, np.arctan(gv / (gh + _EPS)))
        return np.sqrt(gh**2 + gv**2), angle, gv

    ga, aa, _ = sobel(a)
    gb, ab, _ = sobel(b)
    gf, af, _ = sobel(f)

    def preservation(gs: np.ndarray, as_: np.ndarray) -> np.ndarray:
        rel = np.where((gs == 0) | (gf == 0), 0.0, np.where(gs > gf, gf / (gs + _EPS), gs / (gf + _EPS)))
        ang = np.abs(np.abs(as_ - af) - np.pi / 2) * 2 / np.pi
        qg = nrg / (1 + np.exp(-kg * (rel - sg)))
        qa = nra / (1 + np.exp(-ka * (ang - sa)))
        return np.sqrt(qg * qa)

    qaf, qbf = preservation(ga, aa), preservation(gb, ab)
    wa = np.where(ga >= td, ga**lg, 0)
    wb = np.where(gb >= td, gb**lg, 0)
    artefact = (gf > ga) & (gf > gb)
    return float(np.sum(artefact * ((1 - qaf) * wa + (1 - qbf) * wb)) / np.sum(wa + wb))


def _ssim_valid(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    win = _gaussian_1d(11, 1.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu1, mu2 = _filter_valid(x, win), _filter_valid(y, win)
    s11 = _filter_valid(x * x, win) - mu1 * mu1
    s22 = _filter_valid(y * y, win) - mu2 * mu2
    s12 = _filter_valid(x * y, win) - mu1 * mu2
    ssim_map = (2 * mu1 * mu2 + c1) * (2 * s12 + c2) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    return (_ssim_valid(a, f) + _ssim_valid(b, f)) / 2


def multiscale_ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    if min(f.shape) <= 160:
        return float("nan")

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]

    ft = t(f)
    return float((ms_ssim(t(a), ft, data_range=255) + ms_ssim(t(b), ft, data_range=255)) / 2)


def mse(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    a, b, f = a / 255, b / 255, f / 255
    return float((np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2)


def psnr(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    with np.errstate(divide="ignore"):  # inf when F equals both sources
        return float(20 * np.log10(255 / np.sqrt(mse(a, b, f))))


_SINGLE: dict[str, Callable[[np.ndarray], float]] = {
    "EN": entropy,
    "SD": standard_deviation,
    "SF": spatial_frequency,
    "AG": average_gradient,
}
_REFERENCED: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
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


def compute_metrics(
    ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, names: tuple[str, ...] = METRIC_NAMES
) -> dict[str, float]:
    """All metrics (or ``names``) for one triple of 8-bit gray images (H, W)."""
    if not (ir.shape == vi.shape == fused.shape) or ir.ndim != 2:
        raise ValueError(f"metrics need three gray images of one size, got {ir.shape}, {vi.shape}, {fused.shape}")
    a, b, f = (np.asarray(x, np.float64) for x in (ir, vi, fused))
    out = {}
    for name in names:
        if name in _SINGLE:
            out[name] = _SINGLE[name](f)
        elif name in _REFERENCED:
            out[name] = _REFERENCED[name](a, b, f)
        else:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
    return out
