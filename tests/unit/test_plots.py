"""The pictures logged to MLflow: a run without critics draws its curves without a warning."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("matplotlib")

from pipelines.plots import loss_curves  # noqa: E402


def test_loss_curves_without_critics_say_so_and_warn_nothing():
    history = [
        {"epoch": e, "train_g_total": 2.0 - e, "train_g_intensity": 1.0, "val_loss": 2.1 - e, "val_Qabf": 0.3 + e}
        for e in range(2)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" was printed at every epoch
        figure = loss_curves(history)
    panels = {ax.get_title(): ax for ax in figure.axes}
    assert [t.get_text() for t in panels["discriminators"].texts] == ["not trained"]
    assert [line.get_label() for line in panels["generator"].lines] == ["train_g_intensity"]
