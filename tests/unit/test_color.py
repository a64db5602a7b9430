import numpy as np
import pytest

from dwsfusion.color import ImageError, luma_u8, quantize, read_image, rgb_to_ycrcb, write_image, ycrcb_to_rgb


def test_ycrcb_round_trip_is_lossless_within_one_level():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3)).astype(np.float64)
    corners = np.array(np.meshgrid([0, 255], [0, 255], [0, 255])).reshape(3, -1).T[None].astype(np.float64)
    for img in (rgb, corners):
        back = ycrcb_to_rgb(*rgb_to_ycrcb(img / 255)) * 255
        assert np.abs(back - img).max() <= 1.0


def test_luma_matches_pil_convert_l():
    pil = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(luma_u8(rgb), np.asarray(pil.fromarray(rgb).convert("L")))


def test_quantize_truncates_like_the_release_or_rounds():
    x = np.array([0.0, 0.5, 0.999, 1.0, 1.2, -0.1])
    assert quantize(x).tolist() == [0, 127, 254, 255, 255, 0]
    assert quantize(x, rounding="round").tolist() == [0, 128, 255, 255, 255, 0]
    assert quantize(np.array([0.5]), 65535).dtype == np.uint16


@pytest.mark.parametrize(
    "image",
    [
        np.arange(35 * 21, dtype=np.uint8).reshape(35, 21),
        np.random.default_rng(2).integers(0, 256, (17, 9, 3), dtype=np.uint8),
        np.random.default_rng(3).integers(0, 65536, (12, 13), dtype=np.uint16),
    ],
)
def test_png_write_read_is_lossless_and_leaves_no_temp_file(tmp_path, image):
    path = write_image(tmp_path / "x.png", image)
    back, max_value = read_image(path)
    np.testing.assert_array_equal(back, image)
    assert max_value == (255 if image.dtype == np.uint8 else 65535)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.png: not a readable image"):
        read_image(bad)
    with pytest.raises(ImageError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")


def test_fast_training_luma_is_within_one_level_and_scales_16_bit(tmp_path):
    from dwsfusion.color import read_luma_u8

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8)
    write_image(tmp_path / "c.png", rgb)
    assert np.abs(read_luma_u8(tmp_path / "c.png").astype(int) - luma_u8(rgb)).max() <= 1
    gray_as_rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    write_image(tmp_path / "g.png", gray_as_rgb)
    np.testing.assert_array_equal(read_luma_u8(tmp_path / "g.png"), gray_as_rgb[..., 0])
    deep = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    write_image(tmp_path / "d.png", deep)
    np.testing.assert_array_equal(read_luma_u8(tmp_path / "d.png"), np.rint(deep / 257).astype(np.uint8))
