"""A 4-trial sweep on tiny shards through ``dwsfusion tune`` in a subprocess: ASHA stops the
trials that are worse at the first rung, every trial is an MLflow run nested under the sweep's
parent, the best config comes back, and ``--resume`` of a finished sweep is a no-op."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

RAY_SESSION = False  # every Ray here is a subprocess's own
DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))


def _dwsfusion(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([DWSFUSION, *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    assert _dwsfusion("samples", "--out", str(root / "src"), "--count", "5", "--seed", "3").returncode == 0
    prep = ["--patch-size", "161", "--stride", "40", "--val-fraction", "0.4", "--quiet"]
    assert _dwsfusion("prep", "--source", str(root / "src"), "--out", str(root / "patches"), *prep).returncode == 0
    # Forced ASHA stops: one trial at a time in grid order (lr_g 1e-2, 1e-12, 1e-2, 1e-12),
    # each run seeded, so both 1e-2 trials score the same. At the first rung a 1e-12 trial
    # (its generator does not move from the random start) is below the median of the scores
    # recorded so far and is stopped; the second 1e-2 trial ties the best and goes on.
    tree = {
        "train": {
            "data": str(root / "patches"),
            "num_workers": 1,
            "epochs": 2,
            "batch_size": 4,
            "max_steps_per_epoch": 3,
            "materialize": True,
            "shuffle_buffer": 0,
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_experiment": "sweep-test",
        },
        "space": {
            "lr_g": {"type": "grid", "values": [1e-2, 1e-12]},
            "loss.dual_ir": {"type": "choice", "values": [1.5]},
        },
        "name": "tiny",
        "storage_path": str(root / "tune"),
        "num_samples": 2,
        "max_concurrent": 1,
        "grace_period": 1,
        "reduction_factor": 2,
    }
    (root / "sweep.yaml").write_text(yaml.safe_dump(tree))
    done = _dwsfusion("tune", "--config", str(root / "sweep.yaml"), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    uri = tree["train"]["mlflow_tracking_uri"]
    mlflow.set_tracking_uri(uri)
    parent = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.dwsfusion_sweep_name = 'tiny'", output_format="list"
    )[0]
    folder = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="trials.csv")
    table = list(csv.DictReader(open(folder)))
    return root, uri, parent.info.run_id, table, done.stdout


def test_asha_stops_the_worse_trials_and_the_best_comes_back(sweep):
    root, uri, parent_run_id, table, stdout = sweep
    print("\n" + "\n".join(str(row) for row in table))
    assert len(table) == 4
    by_lr = {}
    for row in table:
        by_lr.setdefault(float(row["lr_g"]), []).append(row)
    assert all(r["status"] == "stopped early" and r["epochs"] == "1" for r in by_lr[1e-12])
    assert any(r["status"] == "completed" and r["epochs"] == "2" for r in by_lr[1e-2])
    best = max(table, key=lambda r: float(r["best_val_score"]))
    assert float(best["lr_g"]) == 1e-2
    assert re.search(rf"best val_score {float(best['best_val_score']):.4f} with .*'lr_g': 0.01", stdout)
    assert f"dwsfusion register --run {best['mlflow_run_id']}" in stdout


def test_every_trial_is_nested_under_the_sweep_run(sweep):
    root, uri, parent_run_id, table, stdout = sweep
    client = mlflow.MlflowClient(uri)
    children = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", output_format="list"
    )
    assert len(children) == 4 and {r.info.run_id for r in children} == {r["mlflow_run_id"] for r in table}
    assert all("val_score" in r.data.metrics and "loss.dual_ir" in r.data.params for r in children)
    artifacts = {a.path for a in client.list_artifacts(parent_run_id)}
    assert {"trials.csv", "objective_vs_coefficients.png", "best_params.json"} <= artifacts
    best = max(table, key=lambda r: float(r["best_val_score"]))
    assert client.get_run(parent_run_id).data.tags["best_run_id"] == best["mlflow_run_id"]


def test_a_finished_sweep_resumes_as_a_no_op(sweep):
    root, uri, parent_run_id, table, stdout = sweep
    again = _dwsfusion("tune", "--config", str(root / "sweep.yaml"), "--resume", "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"MLflow parent run {parent_run_id}" in again.stdout
    assert stdout.split("best val_score")[1].splitlines()[0] == again.stdout.split("best val_score")[1].splitlines()[0]
    refused = _dwsfusion("tune", "--config", str(root / "sweep.yaml"))
    assert refused.returncode == 2 and "exists" in refused.stderr
