"""Pictures for MLflow: the fusion grid and loss curves."""

from __future__ import annotations

import cv2
import numpy as np

GRID_COLUMNS = ("IR", "VIS", "fused", "W_ir", "W_vi")


def fusion_grid(rows: list[tuple[np.ndarray, ...]], labels: tuple[str, ...] = GRID_COLUMNS) -> np.ndarray:
    """rows of (IR, VIS, fused, W_ir, W_vi), each (H, W) in [0, 1] -> one uint8 image: a header
    naming each column, then one row per sample, with 2-px white gutters."""
    gutter, header = 2, 20
    h, w = rows[0][0].shape
    cols = len(rows[0])
    grid = np.full((header + len(rows) * (h + gutter) - gutter, cols * (w + gutter) - gutter), 255, np.uint8)
    for c, label in enumerate(labels[:cols]):
        cv2.putText(grid, label, (c * (w + gutter) + 4, header - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = header + r * (h + gutter), c * (w + gutter)
            grid[y : y + h, x : x + w] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return grid


def loss_curves(history: list[dict[str, float]]):
    """Per-epoch curves of every loss term and validation metric (a matplotlib figure)."""
    import matplotlib  # heavy: matplotlib only where a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen

    epochs = [h["epoch"] for h in history]
    groups = {
        "generator": [k for k in history[0] if k.startswith("train_g_") and k != "train_g_total"],
        "discriminators": [k for k in history[0] if k.startswith("train_d_")],
        "total / validation loss": ["train_g_total", "val_loss"],
        "validation metrics": [k for k in history[0] if k.startswith("val_") and k != "val_loss"],
    }
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for ax, (title, keys) in zip(axes, groups.items(), strict=True):
        plotted = [key for key in keys if key in history[0]]
        for key in plotted:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if plotted:
            ax.legend(fontsize=7)
        else:  # e.g. no critics at adversarial weight 0: say so, not an empty legend (and its warning)
            ax.text(0.5, 0.5, "not trained", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    return fig
