"""Ray Train on tiny shards, through the command line as a user runs it: ``dwsfusion
samples``, ``prep`` and ``train`` (2 gloo workers) in subprocesses, MLflow in a temporary
SQLite store; identical ranks, checkpoints, one console line per epoch, the logged model in a
fresh process, ``register --run``, and ``train --resume``."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from pipelines.config import TrainConfig, load_config  # noqa: E402
from pipelines.train import load_train_state  # noqa: E402
from tests.console import library_noise  # noqa: E402

RAY_SESSION = False  # every Ray here is a subprocess's own
DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))


def _dwsfusion(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [DWSFUSION, *args], capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""}, timeout=600
    )
    assert done.returncode == 0, f"dwsfusion {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    _dwsfusion("samples", "--out", str(root / "src"), "--count", "5", "--seed", "3")
    prep = ["--patch-size", "161", "--stride", "40", "--val-fraction", "0.4", "--quiet"]
    _dwsfusion("prep", "--source", str(root / "src"), "--out", str(root / "patches"), *prep)
    tree = {
        "data": str(root / "patches"),
        "storage_path": str(root / "storage"),
        "name": "tiny",
        "num_workers": 2,
        "epochs": 2,
        "batch_size": 4,
        "max_steps_per_epoch": 2,
        "lr_g": 1e-3,
        "lr_d": 1e-3,
        "val_images": 2,
        "materialize": True,
        "augment": True,  # flips, gammas and VIS noise drawn per rank: the ranks must still stay identical
        "vis_noise": 2.0,
        "ema_decay": 0.9,  # the scored, kept generator is the weights' moving average
        "critic_steps": 2,  # WGAN-GP's n_critic ...
        "adversarial_from_epoch": 1,  # ... after a warm-up epoch in which only the critics train
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
    }
    (root / "train.yaml").write_text(yaml.safe_dump(tree))
    done = _dwsfusion("train", "--config", str(root / "train.yaml"))
    run_id = re.search(r"MLflow run:\s+(\w+)", done.stdout).group(1)
    checkpoint = re.search(r"last checkpoint: (\S+)", done.stdout).group(1)
    return root, load_config(TrainConfig, root / "train.yaml"), run_id, checkpoint, done.stdout + done.stderr


def test_two_workers_train_report_checkpoints_and_stay_identical(first_run):
    root, config, run_id, checkpoint, console = first_run
    metrics = mlflow.MlflowClient(config.tracking_uri()).get_run(run_id).data.metrics
    assert metrics["ranks_identical"] == 1.0 and metrics["rank_parameter_spread"] == 0.0
    # One console line per epoch, from rank 0 only; Ray Train's per-report dict only with --verbose.
    assert [len(re.findall(rf"\[tiny epoch {e}\]", console)) for e in (0, 1)] == [1, 1]
    assert "TrainingReport(" not in console and "Reported metrics" not in console
    assert library_noise(console) == []  # samples, prep and train: no library's warnings either
    state = load_train_state(checkpoint)
    assert state["epoch"] == 1 and set(state["nets"]) == {"generator", "d_ir", "d_vi"}
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"generator", "d_ir", "d_vi"}
    assert len(state["history"]) == 2 and state["best"]["generator"] is not None
    # 2 epochs x 2 steps x 2 critic updates; the generator saw their term from epoch 1 only.
    assert {int(v["step"]) for v in state["optimizers"]["d_ir"]["state"].values()} == {8}
    client = mlflow.MlflowClient(config.tracking_uri())
    assert [m.step for m in client.get_metric_history(run_id, "train_g_adversarial")] == [1]
    assert [m.step for m in client.get_metric_history(run_id, "train_d_vi_loss")] == [0, 1]
    average = state["generator_average"]
    assert int(average["n_averaged"]) == 4  # 2 epochs x 2 steps
    if state["best"]["epoch"] == 1:  # the kept generator is the average, not the raw weights
        for key, value in state["best"]["generator"].items():
            assert torch.equal(value, average[f"module.{key}"].cpu()), key


def test_mlflow_holds_params_metrics_images_and_a_model_of_any_size(first_run, tmp_path):
    root, config, run_id, checkpoint, console = first_run
    client = mlflow.MlflowClient(config.tracking_uri())
    run = client.get_run(run_id)
    assert run.data.params["num_workers"] == "2" and run.data.params["loss.dual_cross"] == "1.0"
    for key in (
        "train_g_total",
        "train_g_content",
        "train_g_dual_ir",
        "train_g_dual_vi",
        "train_g_dual_cross",
        "train_g_adversarial",
        "train_d_ir_loss",
        "train_d_vi_loss",
        "val_loss",
        "val_Qabf",
        "val_VIF",
        "val_SSIM",
        "val_MI",
        "ranks_identical",
        "best_val_loss",
    ):
        assert key in run.data.metrics, key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"fusion_grid", "loss_curves.png"} <= artifacts
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "fusion_grid")]
    assert grids == ["fusion_grid/epoch_000.png", "fusion_grid/epoch_001.png"]

    # The logged generator loads in a fresh process and fuses images of different, odd sizes.
    models = list(client.search_logged_models(experiment_ids=[run.info.experiment_id]))
    uri = f"models:/{models[0].model_id}"
    code = (
        "import json, sys, numpy as np, mlflow\n"
        f"mlflow.set_tracking_uri({config.tracking_uri()!r})\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        "shapes = []\n"
        "for h, w in ((37, 53), (64, 81)):\n"
        "    x = np.random.rand(h, w).astype(np.float32)\n"
        "    out = model.predict({'ir': x, 'vi': x[::-1].copy()})\n"
        "    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1\n"
        "    shapes.append(list(out.shape))\n"
        "print(json.dumps(shapes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [[37, 53], [64, 81]]
    location = f"{models[0].artifact_location}/requirements.txt"
    requirements = Path(mlflow.artifacts.download_artifacts(location, dst_path=str(tmp_path)))
    names = {line.split("==")[0] for line in requirements.read_text().split()}
    # What a serving environment installs: public packages only; the library travels as code.
    assert {"torch", "mlflow", "numpy", "opencv-python-headless"} <= names and "dwsfusion" not in names
    code_dir = Path(mlflow.artifacts.download_artifacts(f"{models[0].artifact_location}/code", dst_path=str(tmp_path)))
    assert (code_dir / "dwsfusion" / "checkpoints.py").is_file()


def test_the_printed_checkpoint_fuses_with_its_best_generator(first_run):
    """``dwsfusion fuse --checkpoint`` takes the folder ``train`` prints as its last checkpoint."""
    import torch

    from dwsfusion.checkpoints import load_generator

    root, config, run_id, checkpoint, console = first_run
    best = load_train_state(checkpoint)["best"]["generator"]
    loaded = load_generator(checkpoint).state_dict()
    assert loaded.keys() == best.keys() and all(torch.equal(loaded[k], best[k]) for k in best)
    done = _dwsfusion(
        "fuse",
        "--checkpoint",
        checkpoint,
        "--ir",
        str(root / "src" / "ir"),
        "--vi",
        str(root / "src" / "vi"),
        "--out",
        str(root / "fused"),
        "--quiet",
    )
    assert "fused 5 pair(s)" in done.stdout and len(list((root / "fused").iterdir())) == 5


def test_register_a_training_run_from_the_command_line(first_run):
    root, config, run_id, checkpoint, console = first_run
    done = _dwsfusion("register", "--run", run_id, "--name", "tiny-run", "--tracking-uri", config.tracking_uri())
    assert "registered tiny-run version 1 -> @champion" in done.stdout
    version = mlflow.MlflowClient(config.tracking_uri()).get_model_version_by_alias("tiny-run", "champion")
    assert version.run_id == run_id


def test_a_stopped_run_resumes_from_its_last_epoch(first_run):
    root, config, run_id, checkpoint, console = first_run
    again = subprocess.run(
        [DWSFUSION, "train", "--config", str(root / "train.yaml")], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 2 and "--resume" in again.stderr  # the same name is refused, not overwritten
    done = _dwsfusion("train", "--config", str(root / "train.yaml"), "epochs=3", "--resume", "--quiet")
    assert re.search(r"MLflow run:\s+(\w+)", done.stdout).group(1) == run_id
    assert "finished at epoch 2" in done.stdout  # only epoch 2 ran: it continued after epoch 1
    assert "[tiny epoch" not in done.stdout  # --quiet
    state = load_train_state(re.search(r"last checkpoint: (\S+)", done.stdout).group(1))
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    assert int(state["generator_average"]["n_averaged"]) == 6  # the average went on, not started over
    history = mlflow.MlflowClient(config.tracking_uri()).get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert np.isfinite([m.value for m in history]).all()
