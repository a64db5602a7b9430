"""data_prep's pure parts: patch geometry, pair validation, config, splits (no Ray)."""

import numpy as np
import pytest

from data_prep.config import PrepConfig
from data_prep.patches import grid_positions, pair_problem, pair_scale, patch_count, patch_views, rescale
from data_prep.sources import SourcePair, assign_splits


@pytest.mark.parametrize(
    "h,w,p,s", [(480, 640, 192, 160), (241, 321, 161, 40), (200, 200, 200, 7), (150, 400, 161, 10)]
)
def test_grid_positions_match_the_arithmetic(h, w, p, s):
    positions = grid_positions(h, w, p, s)
    assert len(positions) == patch_count(h, w, p, s)
    expected = 0 if min(h, w) < p else ((h - p) // s + 1) * ((w - p) // s + 1)
    assert len(positions) == expected
    assert all(0 <= y <= h - p and 0 <= x <= w - p and y % s == 0 and x % s == 0 for y, x in positions)
    assert positions == sorted(positions)


def test_patches_sit_at_their_coordinates():
    image = np.arange(20 * 30, dtype=np.int32).reshape(20, 30)
    positions = grid_positions(20, 30, 8, 5)
    patches = np.stack(patch_views(image, positions, 8))
    assert patches.shape == (len(positions), 8, 8)
    for (y, x), patch in zip(positions, patches, strict=True):
        np.testing.assert_array_equal(patch, image[y : y + 8, x : x + 8])


def test_pair_problems_are_explained():
    good = np.random.default_rng(0).integers(0, 255, (200, 210), dtype=np.uint8)
    assert pair_problem(good, good, 161) is None
    assert "size mismatch" in pair_problem(good, good[:, :100], 161)
    assert "smaller than the 161px patch" in pair_problem(good[:150], good[:150], 161)
    assert "IR image is constant (all 7)" in pair_problem(np.full_like(good, 7), good, 161)


def test_config_refuses_patches_the_loss_cannot_use():
    with pytest.raises(ValueError, match="larger than 160 px"):
        PrepConfig(source="s", out="o", patch_size=160)
    assert PrepConfig(source="s", out="o").patch_size > 160


def test_split_is_by_image_deterministic_and_disjoint():
    pairs = [SourcePair("trainval", f"s{i:02d}", "a", "b") for i in range(20)] + [SourcePair("test", "t0", "a", "b")]
    first = assign_splits(pairs, 0.25, seed=3)
    assert first == assign_splits(list(reversed(pairs)), 0.25, seed=3)
    splits = {p.stem: p.split for p in first}
    assert sum(s == "val" for s in splits.values()) == 5 and splits["t0"] == "test"
    assert {p.stem for p in assign_splits(pairs, 0.25, seed=4) if p.split == "val"} != {
        s for s, v in splits.items() if v == "val"
    }


def test_rescale_sizes_and_averages():
    image = np.random.default_rng(0).integers(0, 255, (351, 421), dtype=np.uint8)
    assert rescale(image, 1.0) is image
    half = rescale(image, 0.5)
    assert half.shape == (176, 210) and half.dtype == np.uint8  # round(175.5) = 176, round(210.5) = 210
    # Area averaging: a 2x2 block of the source becomes its mean (up to rounding).
    even = image[:350, :420]
    expected = even.reshape(175, 2, 210, 2).mean(axis=(1, 3))
    assert np.abs(rescale(even, 0.5).astype(float) - expected).max() <= 0.5
    assert rescale(image, 1.5).shape == (526, 632)


def test_fit_patch_shrinks_a_small_pair_only_to_the_patch():
    assert pair_scale(400, 600, 0.6, 176) == 0.6  # large enough at 0.6
    assert pair_scale(265, 546, 0.6, 176) == 0.6  # too small at 0.6: without fit_patch, rejected later
    fitted = pair_scale(265, 546, 0.6, 176, fit_patch=True)
    assert 0.6 < fitted < 1 and round(265 * fitted) == 176  # the short side becomes the patch's
    assert rescale(np.zeros((265, 546), np.uint8), fitted).shape == (176, round(546 * fitted))
    assert pair_scale(546, 265, 0.6, 176, fit_patch=True) == fitted  # the short side, whichever it is
    assert pair_scale(293, 500, 0.6, 176, fit_patch=True) == 0.6  # round(175.8) = 176: fits already
    assert pair_scale(161, 597, 0.6, 176, fit_patch=True) == 1.0  # never enlarged: still too small
    assert pair_scale(150, 150, 1.5, 176, fit_patch=True) == 1.5  # enlarging is the user's call


def test_scale_enters_the_identity_only_when_set():
    plain = PrepConfig(source="s", out="o")
    assert "scale" not in plain.identity()  # data prepared before the option keep their run key
    assert "fit_patch" not in plain.identity()
    assert PrepConfig(source="s", out="o", scale=0.5).identity()["scale"] == 0.5
    assert PrepConfig(source="s", out="o", scale=0.5, fit_patch=True).identity()["fit_patch"] is True
    with pytest.raises(ValueError):
        PrepConfig(source="s", out="o", scale=0)
