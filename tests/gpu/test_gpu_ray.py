"""Ray on a CUDA device: training with ``use_gpu`` (one worker on nccl; two workers sharing
one GPU on gloo), and batch fusion with GPU actors against the CPU path. Needs Ray and MLflow
as well as CUDA: ``pytest -m "gpu and ray" tests/gpu``; skipped where either is missing. A
two-trial Tune sweep shares the GPU too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.ray,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ray = pytest.importorskip("ray")
pytest.importorskip("mlflow")

from data_prep import PrepConfig, run_prep  # noqa: E402
from dwsfusion.color import read_image  # noqa: E402
from dwsfusion.samples import write_samples  # noqa: E402
from pipelines.batch.run import FuseJob, batch_fuse  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from pipelines.train import load_train_state, run_training  # noqa: E402


@pytest.fixture(scope="module")
def ray_gpu():
    ray.init(address="local", num_cpus=4, num_gpus=1, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def patches(tmp_path_factory, ray_gpu):
    root = tmp_path_factory.mktemp("gpu-train")
    write_samples(root / "src", count=5, seed=3)
    config = PrepConfig(
        source=str(root / "src"), out=str(root / "patches"), patch_size=176, stride=48, val_fraction=0.4
    )
    run_prep(config, log=lambda *_: None)
    return root


def _train(root, name: str, **settings) -> dict:
    config = TrainConfig(
        data=str(root / "patches"),
        storage_path=str(root / "storage"),
        name=name,
        use_gpu=True,
        epochs=2,
        batch_size=4,
        max_steps_per_epoch=3,
        lr_g=1e-3,
        lr_d=1e-3,
        materialize=True,
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        **settings,
    )
    result = run_training(config, progress=False)
    return load_train_state(result.checkpoint)


def test_one_worker_trains_on_the_gpu_with_nccl(patches):
    state = _train(patches, "one", num_workers=1)
    last = state["history"][-1]
    assert np.isfinite([last["train_g_total"], last["val_loss"]]).all() and last["ranks_identical"] == 1.0


def test_two_workers_share_one_gpu_and_stay_identical(patches):
    state = _train(patches, "two", num_workers=2, gpus_per_worker=0.5, amp="bf16")
    last = state["history"][-1]
    assert last["ranks_identical"] == 1.0 and last["rank_parameter_spread"] == 0.0
    assert np.isfinite(last["train_g_total"])


def test_a_two_trial_sweep_shares_the_gpu(patches):
    """Ray Tune on the GPU: two trials at once, each one worker on half the GPU (gloo)."""
    from tune import SweepConfig, run_sweep

    train = TrainConfig(
        data=str(patches / "patches"),
        storage_path=str(patches / "storage"),
        name="sweep-base",
        use_gpu=True,
        gpus_per_worker=0.5,
        num_workers=1,
        epochs=1,
        batch_size=4,
        max_steps_per_epoch=2,
        materialize=True,
        mlflow_tracking_uri=f"sqlite:///{patches / 'mlflow.db'}",
    )
    sweep = SweepConfig(
        train=train, name="gpu-sweep", storage_path=str(patches / "tune"), num_samples=2, max_concurrent=2
    )
    result = run_sweep(sweep.model_copy(update={"scheduler": "fifo"}), progress=False)
    assert len(result.table) == 2 and np.isfinite(result.best_score)
    assert result.best_checkpoint is not None


def test_gpu_actors_fuse_like_the_cpu(tmp_path, ray_gpu, random_checkpoint, samples_dir):
    common = {"input": str(samples_dir), "checkpoint": str(random_checkpoint), "metrics": ("Qabf", "VIF")}
    batch_fuse(FuseJob(**common, output=str(tmp_path / "cpu"), actors=1), progress=False)
    batch_fuse(FuseJob(**common, output=str(tmp_path / "gpu"), actors=2, gpus_per_actor=0.5), progress=False)
    names = sorted(p.name for p in (tmp_path / "cpu").glob("*.png"))
    assert names and names == sorted(p.name for p in (tmp_path / "gpu").glob("*.png"))
    for name in names:
        a, b = read_image(tmp_path / "cpu" / name)[0], read_image(tmp_path / "gpu" / name)[0]
        assert np.abs(a.astype(int) - b).max() <= 1, name
