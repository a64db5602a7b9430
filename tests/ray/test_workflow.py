"""The durable workflow through ``dwsfusion pipeline`` in subprocesses, as a user runs it:
end to end with its lineage; a second run of the same id while the first runs is refused at
once, naming the holder, and one model version is registered; ``status`` shows it running; a
second run does nothing; a changed fuse setting reruns only fuse; after a SIGKILL in the train
step the stale lock is reported, broken with ``unlock``, and ``resume`` reruns from train on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("ray")

from pipelines.lock import LOCK_FILE  # noqa: E402
from pipelines.workflow import MARKER, WorkflowConfig, plan  # noqa: E402
from tests.console import library_noise  # noqa: E402

RAY_SESSION = False  # every Ray here is a subprocess's own
DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))


def _write_config(root: Path, **changes) -> Path:
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
    path = root / f"config-{len(list(root.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _dwsfusion(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([DWSFUSION, *args], capture_output=True, text=True, env=env, timeout=600, **kwargs)


def _ran(stdout: str) -> list[str]:
    return [line.split("]")[0].strip("[") for line in stdout.splitlines() if "running ->" in line]


def _config(path: Path) -> WorkflowConfig:
    return WorkflowConfig.model_validate(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The first run, and a second run of the same id started while the first holds the lock."""
    root = tmp_path_factory.mktemp("workflow")
    config_file = _write_config(root)
    env = {**os.environ, "RAY_ADDRESS": ""}
    command = [DWSFUSION, "pipeline", "run", "--config", str(config_file)]  # the console a quickstart shows
    owner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = root / "workflows" / "tiny" / LOCK_FILE
    deadline = time.time() + 120
    while time.time() < deadline and not lock.exists() and owner.poll() is None:
        time.sleep(0.2)
    started = time.perf_counter()
    second = _dwsfusion("pipeline", "run", "--config", str(config_file))
    second_seconds = time.perf_counter() - started
    status = _dwsfusion("pipeline", "status", "tiny", "--storage", str(root / "workflows"))
    stdout, stderr = owner.communicate(timeout=600)
    return root, config_file, owner.returncode, stdout, stderr, second, second_seconds, status


def test_end_to_end_with_lineage(first):
    root, config_file, code, stdout, stderr, *_ = first
    assert code == 0, stderr[-3000:]
    assert _ran(stdout) == ["samples", "prep", "train", "evaluate", "register", "fuse"]
    config = _config(config_file)
    states = plan(config, config.root("tiny"))
    assert all(s.done for s in states)
    outputs = {s.step.provides: s.record["outputs"] for s in states}
    fused = outputs["fuse"]["output"]
    assert len([n for n in os.listdir(fused) if n.endswith(".png")]) == 4
    assert outputs["register"]["model_uri"] == f"models:/tiny-fuser/{outputs['register']['version']}"
    for printed in (fused, outputs["evaluate"]["metrics_csv"]):  # the summary names paths that exist
        assert printed in stdout and Path(printed).exists()
    assert "TrainingReport(" not in stdout + stderr  # Ray Train's per-report dict: only with --verbose
    # Lineage: every step is a run nested under the workflow run; train's run is the model's source.
    mlflow.set_tracking_uri(config.tracking_uri())
    client = mlflow.MlflowClient()
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
    # The table shows the start beside the trained generator, and what training bought
    evaluation = outputs["evaluate"]
    assert evaluation["table"].splitlines()[0].split()[:3] == ["metric", "dwsfusion", "start"]
    assert "training bought (dwsfusion - start): VIF" in stdout
    assert evaluation["start_means"]["VIF"] != evaluation["means"]["VIF"]
    # MLflow's artifacts sit beside its store (mlartifacts/), not in ./mlruns of where it ran
    location = client.get_experiment_by_name("workflow-test").artifact_location.removeprefix("file://")
    assert Path(location) == root / "mlartifacts" / "workflow-test" and any(Path(location).rglob("metrics.csv"))


def test_the_quickstart_verbs_print_no_library_warnings(first):
    """Every verb of the quickstart (samples, prep, train, evaluate, register, fuse), as `make
    quickstart` runs them, without --verbose: our lines, progress bars and real errors only."""
    root, config_file, code, stdout, stderr, *_ = first
    assert code == 0, stderr[-3000:]
    assert "[tiny.train-" in stdout and "epoch 0]" in stdout  # the console was not simply silent
    assert library_noise(stdout + stderr) == []


def test_a_concurrent_run_of_the_same_id_is_refused_at_once(first):
    root, config_file, code, _, _, second, seconds, status = first
    assert code == 0
    assert second.returncode == 2 and seconds < 60
    assert "workflow 'tiny' is running" in second.stderr and "pid " in second.stderr and "host" in second.stderr
    assert status.returncode == 0 and "workflow tiny: running: pid" in status.stdout
    client = mlflow.MlflowClient(_config(config_file).tracking_uri())
    assert len(client.search_model_versions("name = 'tiny-fuser'")) == 1  # trained and registered once
    assert not (root / "workflows" / "tiny" / LOCK_FILE).exists()  # released at the end


def test_second_run_does_nothing_and_a_changed_fuse_setting_reruns_only_fuse(first):
    root, config_file, *_ = first
    again = _dwsfusion("pipeline", "run", "--config", str(config_file), "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _ran(again.stdout) == [] and again.stdout.count("skipped") == 6
    changed = _dwsfusion("pipeline", "run", "--config", str(config_file), "fuse.metrics=[Qabf]", "--quiet")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert _ran(changed.stdout) == ["fuse"]


def test_a_dead_runs_lock_is_reported_stale_refused_and_broken(tmp_path, capsys):
    """The lock half of the kill test below, in seconds: a process holding a workflow's lock is
    SIGKILLed; status names the stale lock, resume refuses with the unlock command, unlock breaks it."""
    from pipelines.cli import main
    from pipelines.workflow import STATE

    config = _config(_write_config(tmp_path))
    root = config.root("tiny")
    root.mkdir(parents=True)
    (root / STATE).write_text(json.dumps({"config": config.model_dump(mode="json")}))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pipelines.lock import WorkflowLock; import time; "
         f"WorkflowLock({str(root)!r}, 'tiny').__enter__(); print('held', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    storage = ["--storage", str(root.parent)]
    assert main(["pipeline", "status", "tiny", *storage]) == 0
    assert "stale lock" in capsys.readouterr().out
    assert main(["pipeline", "resume", "tiny", *storage, "--quiet"]) == 2
    assert "pipeline unlock tiny" in capsys.readouterr().err
    assert main(["pipeline", "unlock", "tiny", *storage]) == 0
    assert f"pid {holder.pid}" in capsys.readouterr().out and not (root / LOCK_FILE).exists()


@pytest.mark.slow  # the lock half runs in the default suite above; a workflow resumed after a failure in -m multinode
def test_kill_in_train_then_unlock_and_resume_reruns_from_train(tmp_path):
    config_file = _write_config(tmp_path, train={"epochs": 3, "max_steps_per_epoch": 4})
    config = _config(config_file)
    root = config.root("tiny")
    # A real kill: the CLI in its own process group, SIGKILLed once training has checkpointed.
    proc = subprocess.Popen(
        [DWSFUSION, "pipeline", "run", "--config", str(config_file), "--quiet"],
        start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.glob("steps/train-*/ray/*/checkpoint_*")):
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    states = {s.step.name: s for s in plan(config, root)}
    assert states["prep"].done and not states["train"].done, "the kill must land inside the train step"
    prep_marker = json.loads((states["prep"].folder / MARKER).read_text())

    storage = ["--storage", str(root.parent)]
    status = _dwsfusion("pipeline", "status", "tiny", *storage)
    assert "stale lock" in status.stdout and f"process {proc.pid}" in status.stdout
    refused = _dwsfusion("pipeline", "resume", "tiny", *storage)
    assert refused.returncode == 2 and "stale lock" in refused.stderr and "pipeline unlock tiny" in refused.stderr
    unlocked = _dwsfusion("pipeline", "unlock", "tiny", *storage)
    assert unlocked.returncode == 0 and f"pid {proc.pid}" in unlocked.stdout
    resumed = _dwsfusion("pipeline", "resume", "tiny", *storage, "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _ran(resumed.stdout) == ["train", "evaluate", "register", "fuse"]
    assert json.loads((states["prep"].folder / MARKER).read_text()) == prep_marker
