"""Each metric on small cases whose value can be worked out by hand."""

import math

import cv2
import numpy as np
import pytest

from dwsfusion import metrics as m

RNG = np.random.default_rng(0)
TEXTURE = np.clip(np.round(128 + 60 * RNG.standard_normal((180, 190))), 0, 255)
EDGES = np.zeros((180, 190))
EDGES[:, 95:] = 200.0


def test_names_are_the_full_suite():
    assert m.METRIC_NAMES == (
        "EN",
        "SD",
        "SF",
        "AG",
        "MI",
        "SCD",
        "CC",
        "VIF",
        "Qabf",
        "Nabf",
        "SSIM",
        "MS-SSIM",
        "PSNR",
        "MSE",
    )
    assert set(m.compute_metrics(TEXTURE, TEXTURE, TEXTURE)) == set(m.METRIC_NAMES)


def test_entropy_and_sd_of_a_two_level_image():
    img = np.zeros((10, 10))
    img[:, 5:] = 255
    assert m.entropy(img) == pytest.approx(1.0, abs=1e-6)
    assert m.entropy(np.full((8, 8), 7.0)) == pytest.approx(0.0, abs=1e-6)
    assert m.standard_deviation(img) == pytest.approx(127.5)


def test_spatial_frequency_and_average_gradient_of_a_ramp():
    ramp = np.tile(np.arange(10, dtype=np.float64) * 3, (6, 1))  # +3 per column, constant rows
    assert m.spatial_frequency(ramp) == pytest.approx(3.0)
    # np.gradient: gx = 3 everywhere, gy = 0 -> s = 3/sqrt(2), summed over 6x10, / (5*9)
    assert m.average_gradient(ramp) == pytest.approx(60 * 3 / math.sqrt(2) / 45)


def test_mutual_information_of_identical_images_is_twice_the_entropy():
    img = np.zeros((4, 4))
    img[:2] = 10
    img[2:, :2] = 20
    img[2:, 2:] = 30  # p = 1/2, 1/4, 1/4 -> H = 1.5 bits
    assert m.mutual_information(img, img, img) == pytest.approx(3.0)
    assert m.mutual_information(img, img, np.full((4, 4), 5.0)) == pytest.approx(0.0)


def test_correlations():
    assert m.correlation_coefficient(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(1.0, abs=1e-9)
    assert m.correlation_coefficient(TEXTURE, 255 - TEXTURE, TEXTURE) == pytest.approx(0.0, abs=1e-9)
    other = np.clip(np.round(100 + 50 * RNG.standard_normal(TEXTURE.shape)), 0, 255)
    # F = A + B: F - B = A and F - A = B, so SCD = 2 exactly.
    assert m.scd(TEXTURE, other, TEXTURE + other) == pytest.approx(2.0)


def test_psnr_and_mse_convention():
    a, b = np.zeros((4, 4)), np.full((4, 4), 255.0)
    f = np.full((4, 4), 51.0)  # 0.2 from a, 0.8 from b on [0, 1]
    assert m.mse(a, b, f) == pytest.approx((0.04 + 0.64) / 2)
    assert m.psnr(a, b, f) == pytest.approx(20 * math.log10(255 / math.sqrt(0.34)))


def test_structural_metrics_of_identical_images():
    assert m.ssim(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(1.0)
    assert m.multiscale_ssim(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(m.multiscale_ssim(TEXTURE[:100], TEXTURE[:100], TEXTURE[:100]))
    assert m.vif(TEXTURE, TEXTURE, TEXTURE) == pytest.approx(2.0)


def test_vif_by_scale_adds_up_to_vif_and_shows_where_blur_loses():
    nums, dens = m.vif_scales(TEXTURE, TEXTURE)
    assert len(nums) == len(dens) == 4
    assert [n / d for n, d in zip(nums, dens, strict=True)] == pytest.approx([1.0] * 4)  # nothing lost
    blurred = cv2.GaussianBlur(TEXTURE, (0, 0), 1.0)
    nums, dens = m.vif_scales(TEXTURE, blurred)
    assert m.vif(TEXTURE, EDGES, blurred) == pytest.approx(
        sum(nums) / sum(dens) + m._vif_pixel_multiscale(EDGES, blurred), rel=1e-12
    )
    kept = [n / d for n, d in zip(nums, dens, strict=True)]
    assert kept[0] < 0.5 * kept[-1]  # a blur of one pixel loses the finest scale, far less the coarsest


def test_edge_metrics_on_a_step_edge():
    # F == A == B: every edge is preserved with G = gF (the reference's quirk, gF >> 1 here)
    # and orientation agreement 1, so Qabf = Tg * Ta / (1 + exp(-22 * 0.2)).
    expected = 0.9994 * 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    assert m.qabf(EDGES, EDGES, EDGES) == pytest.approx(expected, rel=1e-6)
    assert m.nabf(EDGES, EDGES, EDGES) == pytest.approx(0.0)
    assert m.nabf(EDGES, EDGES, EDGES * 1.2) > 0  # stronger edges than either source: artefacts
    assert m.qabf(EDGES, EDGES, np.zeros_like(EDGES)) < 0.01  # the edge is lost


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one size"):
        m.compute_metrics(TEXTURE, TEXTURE, TEXTURE[:10])


def _parity(triples, rtol: float = 1e-4) -> dict[str, float]:
    """Worst relative difference per metric between the torch suite and the NumPy suite."""
    from dwsfusion import metrics_torch

    worst: dict[str, float] = {}
    for a, b, f in triples:
        expected, got = m.compute_metrics(a, b, f), metrics_torch.compute_metrics(a, b, f)
        for name, value in expected.items():
            if math.isnan(value):
                assert math.isnan(got[name]), name
                continue
            # relative, except near zero (a flat fused image has MI 0: float noise of either sign)
            worst[name] = max(worst.get(name, 0.0), abs(got[name] - value) / max(abs(value), 1e-6))
    assert all(v <= rtol for v in worst.values()), worst
    return worst


def test_the_torch_suite_equals_the_numpy_suite_on_synthetic_images():
    rng = np.random.default_rng(3)
    a = np.clip(np.round(100 + 50 * rng.standard_normal((181, 197))), 0, 255).astype(np.uint8)
    b = np.clip(np.round(150 + 40 * rng.standard_normal((181, 197))), 0, 255).astype(np.uint8)
    f = ((a.astype(np.uint16) + b) // 2).astype(np.uint8)
    flat = np.full(EDGES.shape, 77, np.uint8)
    assert set(_parity([(a, b, f), (a, b, b), (EDGES.astype(np.uint8), TEXTURE.astype(np.uint8), flat)])) >= {
        "VIF",
        "Qabf",
        "Nabf",
        "MI",
    }


def test_the_torch_suite_equals_the_numpy_suite_on_the_authors_tno_images():
    from dwsfusion.evaluate import gray_u8
    from tests.conftest import need_shared

    fused = need_shared("official", "tno_fused")
    tno = need_shared("data", "TNO")
    names = sorted(p.name for p in fused.iterdir())[:6]
    _parity([(gray_u8(tno / "ir" / n), gray_u8(tno / "vi" / n), gray_u8(fused / n)) for n in names])


def test_freed_image_buffers_stay_in_the_process_under_glibc():
    """dwsfusion.metrics raises glibc's thresholds at import (the first pair as fast as the next;
    benchmarks/metric_speed.py measures it); elsewhere nothing is changed and nothing fails."""
    import platform
    import sys

    from dwsfusion.allocator import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
