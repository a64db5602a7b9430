"""The durable workflow on CPU: end to end, a second run does nothing, a changed fuse setting
reruns only fuse, and after a kill in the train step a resume reruns from train on.
One Ray session for the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from pipelines.workflow import MARKER, WorkflowConfig, plan, run_workflow, workflow_root  # noqa: E402

RAY_CPUS = 3


def _config(root, **changes) -> WorkflowConfig:
    tree = {
        "name": "tiny",
        "storage": str(root / "workflows"),
        "samples": {"count": 4, "seed": 1},
        "prep": {"patch_size": 161, "stride": 80, "val_fraction": 0.5},
        "train": {
            "num_workers": 1,
            "epochs": 1,
            "batch_size": 2,
            "max_steps_per_epoch": 2,
            "lr_g": 1e-3,
            "lr_d": 1e-3,
            "materialize": True,
            "val_images": 2,
        },
        "registry": {"name": "tiny-fuser"},
        "fuse": {"metrics": ["Qabf", "VIF"], "actors": 1},
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow_experiment": "workflow-test",
    }
    for key, value in changes.items():
        tree[key] = {**tree[key], **value}
    return WorkflowConfig.model_validate(tree)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    config = _config(root)
    logs: list[str] = []
    states = run_workflow(config, log=logs.append)
    return root, config, states, logs


def _ran(logs: list[str]) -> list[str]:
    return [line.split("]")[0].strip("[") for line in logs if "running ->" in line]


def test_end_to_end_with_lineage(first):
    root, config, states, logs = first
    assert _ran(logs) == ["samples", "prep", "train", "evaluate", "register", "fuse"]
    assert all(s.done for s in states)
    outputs = {s.step.provides: s.record["outputs"] for s in states}
    fused = outputs["fuse"]["output"]
    assert len([n for n in os.listdir(fused) if n.endswith(".png")]) == 4
    assert outputs["register"]["model_uri"] == f"models:/tiny-fuser/{outputs['register']['version']}"
    # Lineage: every step is a run nested under the workflow run; train's run is the model's source.
    client = mlflow.MlflowClient(config.tracking_uri())
    parent = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.dwsfusion_workflow_id = 'tiny'", output_format="list"
    )[0]
    children = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    names = {r.info.run_name for r in children}
    assert names >= {"samples", "prep", "evaluate", "register", "fuse"}
    assert any(name.startswith("tiny.train-") for name in names)  # the training run, named by its step key
    version = client.get_model_version("tiny-fuser", outputs["register"]["version"])
    assert version.run_id == outputs["model"]["run_id"]


def test_second_run_does_nothing(first):
    root, config, _, _ = first
    logs: list[str] = []
    run_workflow(config, log=logs.append)
    assert _ran(logs) == [] and sum("skipped" in line for line in logs) == 6


def test_changed_fuse_settings_rerun_only_fuse(first):
    root, _, _, _ = first
    changed = _config(root, fuse={"metrics": ["Qabf"]})
    logs: list[str] = []
    run_workflow(changed, log=logs.append)
    assert _ran(logs) == ["fuse"]


def test_kill_in_train_then_resume_reruns_from_train(first, tmp_path):
    root, _, _, _ = first
    config = _config(tmp_path, train={"epochs": 3, "max_steps_per_epoch": 4})
    (tmp_path / "config.json").write_text(config.model_dump_json())
    # A real kill: the CLI in its own process group, SIGKILLed once training has started.
    script = (
        "import json, sys; from pipelines.workflow import WorkflowConfig, run_workflow; "
        f"run_workflow(WorkflowConfig.model_validate_json(open({str(tmp_path / 'config.json')!r}).read()))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root_dir = workflow_root(config, "tiny")
    deadline = time.time() + 240
    while time.time() < deadline and not list(root_dir.glob("steps/train-*/ray/*/checkpoint_*")):
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    states = {s.step.name: s for s in plan(config, root_dir)}
    assert states["prep"].done and not states["train"].done, "the kill must land inside the train step"
    prep_marker = json.loads((states["prep"].folder / MARKER).read_text())

    logs: list[str] = []
    run_workflow(config, log=logs.append)
    assert _ran(logs) == ["train", "evaluate", "register", "fuse"]
    assert json.loads((states["prep"].folder / MARKER).read_text()) == prep_marker
