"""Colour conversion and image I/O: the one place for luma, YCrCb and bit depths.

All conversions follow the release (spec "Input and output"): Y = 0.299R + 0.587G + 0.114B,
Cr = (R - Y)*0.713 + 0.5, Cb = (B - Y)*0.564 + 0.5, each clamped to [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import UsageError
from .files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 100_000_000  # refuse larger images (decompression bombs); fuse big ones in tiles


class ImageError(UsageError):
    """An image that cannot be used, with the file and the reason in the message."""


def header_pixels(head: bytes) -> int | None:
    """Width x height from an image header (Pillow reads the header only), None if unknown."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(head)) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse is left to the decoder's checks
        return None


def check_header_pixels(path: str | os.PathLike, limit: int) -> None:
    """Refuse an image file whose header declares more than ``limit`` pixels, before any
    decode (a decompression bomb never reaches the decoder)."""
    with open(path, "rb") as handle:
        pixels = header_pixels(handle.read(1 << 16))
    if pixels is not None and pixels > limit:
        raise ImageError(f"{path}: header declares {pixels} pixels, above the limit of {limit}")


def rgb_to_ycrcb(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) float RGB in [0, 1] -> Y, Cr, Cb, each (H, W) in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 0.5
    cb = (b - y) * 0.564 + 0.5
    return np.clip(y, 0, 1), np.clip(cr, 0, 1), np.clip(cb, 0, 1)


def ycrcb_to_rgb(y: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycrcb``: (H, W) planes -> (H, W, 3) RGB in [0, 1], clamped."""
    r = y + 1.403 * (cr - 0.5)
    g = y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5)
    b = y + 1.773 * (cb - 0.5)
    return np.clip(np.stack((r, g, b), axis=-1), 0, 1)


def luma_u8(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of 8-bit RGB, bit-exact with PIL's ``convert('L')`` (the metric
    convention of the authors' evaluation code)."""
    rgb = rgb.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def decode_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode as OpenCV does (BGR order, alpha kept), with every check and a clear error.
    Returns (array, max value: 255 or 65535)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    # imdecode from bytes: works with any path (unicode too), and fails cleanly on junk.
    return decode_image_bytes(np.fromfile(path, dtype=np.uint8), str(path))


def decode_image_bytes(data: bytes | np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """``decode_image`` of an encoded image in memory (an archive member); ``name`` is what
    an error names."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if data.size == 0:
        raise ImageError(f"{name}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{name}: not a readable image")
    if image.dtype == np.uint8:
        max_value = 255
    elif image.dtype == np.uint16:
        max_value = 65535
    else:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype} (8- or 16-bit expected)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {image.shape[1]}x{image.shape[0]} exceeds {MAX_PIXELS} pixels")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return image, max_value


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an 8- or 16-bit image as RGB or gray. Returns (array, max value: 255 or 65535).

    Arrays are (H, W) for gray and (H, W, 3) RGB for colour; alpha is dropped; a 3-channel
    file whose channels are equal is returned as gray.
    """
    return as_rgb_or_gray(*decode_image(path))


def read_image_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """``read_image`` of an encoded image in memory."""
    return as_rgb_or_gray(*decode_image_bytes(data, name))


def as_rgb_or_gray(image: np.ndarray, max_value: int) -> tuple[np.ndarray, int]:
    """A decoded (BGR/BGRA or gray) image -> RGB, or gray where its three channels are equal."""
    if image.ndim == 3:
        image = image[..., 2::-1]  # BGR(A) -> RGB
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
            image = image[..., 0]
    return np.ascontiguousarray(image), max_value


def read_luma_u8(path: str | os.PathLike) -> np.ndarray:
    """Fast 8-bit luma for training data: OpenCV's BT.601 conversion (exact for gray stored
    as RGB, within one level of ``luma_u8`` for colour); 16-bit is scaled to 8-bit."""
    image, max_value = decode_image(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if max_value != 255:
        image = cv2.convertScaleAbs(image, alpha=255 / 65535)  # rounds, saturates to uint8
    return image


def to_gray_float(image: np.ndarray, max_value: int) -> np.ndarray:
    """Any read image -> (H, W) float32 luma in [0, 1] (colour IR files are first converted)."""
    if image.ndim == 2:
        return image.astype(np.float32) / max_value
    if max_value == 255:
        return luma_u8(image).astype(np.float32) / 255
    return rgb_to_ycrcb(image.astype(np.float32) / max_value)[0].astype(np.float32)


def quantize(image: np.ndarray, max_value: int = 255, rounding: str = "truncate") -> np.ndarray:
    """[0, 1] float -> uint8/uint16. ``truncate`` is the release's (x255 then cast);
    ``round`` is nearest."""
    scaled = np.clip(image, 0, 1) * max_value
    scaled = np.floor(scaled) if rounding == "truncate" else np.rint(scaled)
    return scaled.astype(np.uint8 if max_value == 255 else np.uint16)


def encode_png(image: np.ndarray, name: str = "image") -> bytes:
    """A gray or RGB uint8/uint16 image -> lossless PNG bytes."""
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ImageError(f"{name}: PNG encoding failed")
    return encoded.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a gray or RGB uint8/uint16 image losslessly (PNG) and atomically: a temp file in
    the target folder, then a rename, so no half-written image is ever visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, encode_png(image, str(path)))
