"""The sweep's picture: the objective against each swept coefficient, one panel each."""

from __future__ import annotations

import math


def objective_vs_coefficients(rows: list[dict], space: list[str], objective: str):
    """Scatter of each trial's best objective against each coefficient (log x for positive
    ranges); stopped-early trials hollow, diverged ones marked at zero."""
    import matplotlib  # heavy: matplotlib only where a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen

    fig, axes = plt.subplots(1, len(space), figsize=(4.5 * len(space), 3.8), squeeze=False)
    for ax, key in zip(axes[0], space, strict=True):
        for row in rows:
            x, y = row.get(key), row["best_val_score"]
            if not isinstance(x, (int, float)) or not math.isfinite(y):
                continue
            full = row["status"] == "completed"
            ax.scatter(
                x,
                y,
                s=40,
                facecolors="C0" if full else "none",
                edgecolors="C3" if row["status"] == "diverged" else "C0",
            )
        values = [r.get(key) for r in rows if isinstance(r.get(key), (int, float))]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {objective}")
        ax.grid(alpha=0.3)
    fig.suptitle("filled: completed, hollow: stopped early, red: diverged")
    fig.tight_layout()
    return fig
