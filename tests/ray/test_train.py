"""Ray Train on tiny shards: 2 gloo workers, MLflow in a temporary SQLite store,
identical ranks, checkpoints, resume. One Ray session for the module."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from data_prep import PrepConfig, run_prep  # noqa: E402
from dwsfusion.samples import write_samples  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from pipelines.train import load_train_state, run_training  # noqa: E402

RAY_CPUS = 4  # two training workers + Ray Data reads


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_samples(root / "src", count=5, seed=3)
    run_prep(
        PrepConfig(
            source=str(root / "src"), out=str(root / "patches"), patch_size=161, stride=40, val_fraction=0.4, seed=0
        ),
        log=lambda *_: None,
    )
    config = TrainConfig(
        data=str(root / "patches"),
        storage_path=str(root / "storage"),
        name="tiny",
        num_workers=2,
        epochs=2,
        batch_size=4,
        max_steps_per_epoch=2,
        lr_g=1e-3,
        lr_d=1e-3,
        val_images=2,
        materialize=True,
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
    )
    return config, run_training(config)


def test_two_workers_train_report_checkpoints_and_stay_identical(first_run):
    config, result = first_run
    assert result.metrics["epoch"] == 1
    assert result.metrics["ranks_identical"] == 1.0 and result.metrics["rank_parameter_spread"] == 0.0
    state = load_train_state(result.checkpoint)
    assert state["epoch"] == 1 and set(state["nets"]) == {"generator", "d_ir", "d_vi"}
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"generator", "d_ir", "d_vi"}
    assert len(state["history"]) == 2 and state["best"]["generator"] is not None


def test_mlflow_holds_params_metrics_images_and_a_model_of_any_size(first_run, tmp_path):
    config, result = first_run
    client = mlflow.MlflowClient(config.tracking_uri())
    run = client.get_run(result.mlflow_run_id)
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
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
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
    assert {"dwsfusion", "torch", "mlflow"} <= names  # what a serving environment must install


def test_a_stopped_run_resumes_from_its_last_epoch(first_run):
    config, first = first_run
    with pytest.raises(ValueError, match="--resume"):
        run_training(config)  # the same name without --resume is refused, not overwritten
    longer = config.model_copy(update={"epochs": 3})
    resumed = run_training(longer, resume=True)
    assert resumed.mlflow_run_id == first.mlflow_run_id
    assert resumed.metrics["epoch"] == 2  # only epoch 2 ran: it continued after epoch 1
    state = load_train_state(resumed.checkpoint)
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    history = mlflow.MlflowClient(config.tracking_uri()).get_metric_history(first.mlflow_run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert np.isfinite([m.value for m in history]).all()
