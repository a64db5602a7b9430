"""Pictures for MLflow: the fusion grid and loss curves."""

from __future__ import annotations

import numpy as np


def fusion_grid(rows: list[tuple[np.ndarray, ...]]) -> np.ndarray:
    """rows of (IR, VIS, fused, W_ir, W_vi), each (H, W) in [0, 1] -> one uint8 image with a
    2-px white gutter: one row per sample, columns IR | VIS | fused | W_ir | W_vi."""
    gutter = 2
    h, w = rows[0][0].shape
    cols = len(rows[0])
    grid = np.full((len(rows) * (h + gutter) - gutter, cols * (w + gutter) - gutter), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = r * (h + gutter), c * (w + gutter)
            grid[y : y + h, x : x + w] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return grid


def loss_curves(history: list[dict[str, float]]):
    """Per-epoch curves of every loss term and validation metric (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    groups = {
        "generator": [k for k in history[0] if k.startswith("train_g_") and k != "train_g_total"],
        "discriminators": [k for k in history[0] if k.startswith("train_d_")],
        "total / validation loss": ["train_g_total", "val_loss"],
        "validation metrics": [k for k in history[0] if k.startswith("val_") and k != "val_loss"],
    }
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for ax, (title, keys) in zip(axes, groups.items(), strict=True):
        for key in keys:
            if key in history[0]:
                ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
