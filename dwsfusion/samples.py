"""Seeded synthetic IR/VIS scenes, so the quickstart and tests need no outside data.

Each scene has what makes fusion non-trivial: warm targets and a sky/ground temperature
gradient that only the IR sees (the targets are camouflaged in the VIS), and texture,
buildings, road markings and colour that only the VIS sees. Sizes are odd on purpose.
Same seed, same images (NumPy's PCG64 and OpenCV's deterministic drawing).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .color import write_image

DEFAULT_SIZES = ((241, 321), (257, 343), (199, 265), (240, 320), (301, 401), (223, 287))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    noise = rng.standard_normal((h, w)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), scale)


def make_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One registered pair: IR (H, W) uint8 and VIS (H, W, 3) uint8 RGB."""
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    horizon = int(h * rng.uniform(0.3, 0.5))
    sky = np.broadcast_to(yy < horizon / h, (h, w))

    # Visible: sky colour, textured ground, buildings with windows, road markings.
    ground_tex = 0.5 + 0.25 * _smooth_noise(rng, h, w, 1.2) + 0.15 * _smooth_noise(rng, h, w, 6)
    vis = np.empty((h, w, 3), np.float32)
    sky_rgb = np.array([0.55, 0.7, 0.9], np.float32) * (0.8 + 0.2 * (1 - yy[..., None]))
    ground_rgb = np.stack([0.45 * ground_tex, 0.5 * ground_tex, 0.3 * ground_tex], axis=-1)
    vis[:] = np.where(sky[..., None], np.broadcast_to(sky_rgb, (h, w, 3)), ground_rgb)
    for _ in range(rng.integers(2, 5)):
        bw, bh = int(rng.integers(w // 10, w // 4)), int(rng.integers(h // 6, h // 3))
        x0 = int(rng.integers(0, w - bw))
        y1 = horizon + int(rng.integers(0, max(h // 10, 1)))
        colour = rng.uniform(0.3, 0.8, 3).astype(np.float32)
        cv2.rectangle(vis, (x0, y1 - bh), (x0 + bw, y1), colour.tolist(), -1)
        for wy in range(y1 - bh + 4, y1 - 6, 9):
            for wx in range(x0 + 4, x0 + bw - 4, 8):
                cv2.rectangle(vis, (wx, wy), (wx + 3, wy + 4), (0.95, 0.9, 0.6), -1)
    road_y = int(h * rng.uniform(0.75, 0.9))
    cv2.line(vis, (0, road_y), (w - 1, road_y), (0.9, 0.9, 0.9), 2)
    for x in range(0, w, 24):
        cv2.line(vis, (x, road_y + 8), (x + 10, road_y + 8), (0.95, 0.95, 0.2), 2)

    # Infrared: cold sky, a ground temperature gradient, faint structure, warm targets.
    ir = np.where(sky, 0.1 + 0.1 * yy, 0.3 + 0.25 * yy).astype(np.float32)  # (H, W)
    ir += 0.05 * _smooth_noise(rng, h, w, 8)
    ir += 0.08 * cv2.GaussianBlur(vis.mean(axis=-1), (0, 0), 3)  # walls radiate a little
    for _ in range(rng.integers(2, 6)):
        cx, cy = int(rng.integers(w // 10, w - w // 10)), int(rng.integers(horizon, h - h // 10))
        tw, th = int(rng.integers(4, 10)), int(rng.integers(10, 24))
        heat = float(rng.uniform(0.75, 1.0))
        cv2.ellipse(ir, (cx, cy), (tw, th), 0, 0, 360, heat, -1)
        # In the VIS, the target is camouflaged: ground-coloured, with a faint outline.
        cv2.ellipse(vis, (cx, cy), (tw, th), 0, 0, 360, ground_rgb[cy, cx].tolist(), -1)
    ir = cv2.GaussianBlur(ir, (0, 0), 1.0) + 0.01 * rng.standard_normal((h, w)).astype(np.float32)
    vis = vis + 0.01 * rng.standard_normal((h, w, 3)).astype(np.float32)
    to_u8 = lambda x: np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(ir), to_u8(vis)


def write_samples(
    out_dir: str | Path, count: int = 6, seed: int = 0, sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
) -> Path:
    """Write ``count`` pairs as ``out_dir/ir/scene_XX.png`` and ``out_dir/vi/scene_XX.png``."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        ir, vis = make_scene(rng, h, w)
        write_image(out_dir / "ir" / f"scene_{i:02d}.png", ir)
        write_image(out_dir / "vi" / f"scene_{i:02d}.png", vis)
    return out_dir
