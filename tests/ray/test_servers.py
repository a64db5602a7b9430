"""The pipeline against real servers on loopback ports, as on a cluster: an S3-compatible object
store (moto's server, given to every tool through ``AWS_ENDPOINT_URL``) and an MLflow tracking
server with proxied artifacts. ``prep`` writes its shards to ``s3://``; training keeps its Ray
Train storage there; batch fusion streams an archive shard from an ``s3://`` prefix to another
(one fused shard, its Parquet table, the manifest) and refuses an ``s3://`` archive output before
any work; registration, the promotion gate and fusion by ``models:/NAME@ALIAS`` go
through the MLflow server, and the commands say how to see it (the server's URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("moto")

from tests.ray.servers import free_port, moto_s3, s3_client, server_log, stop, wait_for  # noqa: E402

RAY_SESSION = False  # every Ray here is a subprocess's own
# Minutes of servers or simulated nodes: outside the default suite (docs/testing.md).
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
DWSFUSION = str(BIN / "dwsfusion")


@pytest.fixture  # fresh servers per test, their output in files (a full stderr pipe once hung moto's server)
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("servers")
    mlflow_port, log = free_port(), server_log("mlflow")
    with moto_s3() as s3, log.open("w") as output:
        env = {**os.environ, **s3, "RAY_ADDRESS": ""}
        tracking = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
            + [
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
            ],
            env={**env, "PATH": f"{BIN}:{os.environ['PATH']}"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(f"http://127.0.0.1:{mlflow_port}/health", tracking, log=log)
            s3_client(env).create_bucket(Bucket="fusion")
            yield root, env, f"http://127.0.0.1:{mlflow_port}"
        finally:
            stop(tracking)


def _dwsfusion(env: dict, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([DWSFUSION, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == expect, f"dwsfusion {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _two_steps(data: str, tracking: str) -> dict:
    """A training of two steps on the shards at ``data``, tracked on the server."""
    return {
        "data": data,
        "num_workers": 1,
        "epochs": 1,
        "batch_size": 2,
        "max_steps_per_epoch": 2,
        "materialize": True,
        "val_images": 2,
        "mlflow_tracking_uri": tracking,
    }


def test_prep_and_training_keep_their_data_in_object_storage(servers, tmp_path):
    root, env, tracking = servers
    _dwsfusion(env, "samples", "--out", str(tmp_path / "src"), "--count", "4", "--seed", "3")
    prep = ["--patch-size", "161", "--stride", "60", "--val-fraction", "0.5", "--quiet"]
    _dwsfusion(env, "prep", "--source", str(tmp_path / "src"), "--out", "s3://fusion/patches", *prep)
    config = {**_two_steps("s3://fusion/patches", tracking), "storage_path": "s3://fusion/train", "name": "on-s3"}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    done = _dwsfusion(env, "train", "--config", str(tmp_path / "train.yaml"), "--quiet")
    assert "last checkpoint: s3://fusion/train/on-s3/checkpoint_" in done.stdout
    assert f"open {tracking}" in done.stdout  # a server is seen at its own URL, not with `mlflow ui`
    checkpoint = re.search(r"last checkpoint: (\S+)", done.stdout).group(1)
    code = "import sys; from pipelines.train import load_train_state; print(load_train_state(sys.argv[1])['epoch'])"
    read = subprocess.run([sys.executable, "-c", code, checkpoint], env=env, capture_output=True, text=True)
    assert read.stdout.strip() == "0", read.stderr[-2000:]  # the printed URI reads back
    run_id = re.search(r"MLflow run:\s+(\w+)", done.stdout).group(1)

    keys = [o["Key"] for o in s3_client(env).list_objects_v2(Bucket="fusion")["Contents"]]
    assert "patches/manifest.json" in keys and any(k.startswith("train/on-s3/checkpoint_") for k in keys)

    # Registration and the gate through the server, then fusion by alias of an archive read from s3://
    done = _dwsfusion(env, "register", "--run", run_id, "--name", "on-s3", "--tracking-uri", tracking)
    assert "registered on-s3 version 1 -> @champion" in done.stdout
    archive = tmp_path / "night.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tmp_path / "src" / "ir", "night/ir")
        packed.add(tmp_path / "src" / "vi", "night/vi")
    s3_client(env).upload_file(str(archive), "fusion", "in/night.tar.gz")
    by_alias = ["--model", "models:/on-s3@champion", "--tracking-uri", tracking, "--metrics", "Qabf", "--quiet"]
    done = _dwsfusion(env, "fuse", *by_alias, "--input", "s3://fusion/in/", "--output", "s3://fusion/out/")
    assert "fused 4 pair(s) now, 0 already done; 4 pair(s) in 1 shard(s)" in done.stdout
    keys = sorted(o["Key"] for o in s3_client(env).list_objects_v2(Bucket="fusion", Prefix="out/")["Contents"])
    assert [k for k in keys if not k.endswith("/")] == [
        "out/manifest.json",
        "out/metrics/night.parquet",
        "out/night.tar",
    ]
    refused = _dwsfusion(
        env, "fuse", *by_alias, "--input", "s3://fusion/in/", "--output", "s3://fusion/o.zip", expect=2
    )
    assert "s3://fusion/o.zip" in refused.stderr and "the output is a prefix" in refused.stderr
    client = mlflow.MlflowClient(tracking)
    assert client.get_model_version_by_alias("on-s3", "champion").run_id == run_id


def test_the_workflow_keeps_shards_and_checkpoints_in_object_storage(servers, tmp_path):
    """One command (docs/cluster.md): the quickstart workflow with ``data_store`` on the S3
    server and MLflow on the server process. Shards and checkpoints land in the bucket, the step
    folders keep only the workflow's own state and small outputs, and registration and fusion
    by alias go through the server."""
    root, env, tracking = servers
    shorter = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.val_images=2", "fuse.actors=1"]
    done = _dwsfusion(
        env,
        "pipeline",
        "run",
        "--config",
        str(REPO / "configs" / "quickstart.yaml"),
        "--quiet",
        f"storage={tmp_path / 'workflows'}",
        "data_store=s3://fusion/workflows",
        f"mlflow_tracking_uri={tracking}",
        *shorter,
    )
    keys = [o["Key"] for o in s3_client(env).list_objects_v2(Bucket="fusion", Prefix="workflows/")["Contents"]]
    assert any(re.fullmatch(r"workflows/quickstart/prep-\w+/patches/manifest\.json", k) for k in keys), keys[:20]
    assert any(re.match(r"workflows/quickstart/train-\w+/ray/[^/]+/checkpoint_", k) for k in keys), keys[:20]
    steps = tmp_path / "workflows" / "quickstart" / "steps"
    assert not list(steps.glob("*/patches")) and not list(steps.glob("*/ray"))  # nothing bulky kept locally
    assert len(list(steps.glob("fuse-*/fused/*.png"))) == 6
    client = mlflow.MlflowClient(tracking)
    assert client.get_model_version_by_alias("dwsfusion-quickstart", "champion").version == "1"
    assert f"open {tracking}" in done.stdout


def test_a_sweep_keeps_its_trials_in_object_storage(servers, tmp_path):
    root, env, tracking = servers
    _dwsfusion(env, "samples", "--out", str(tmp_path / "src"), "--count", "4", "--seed", "4")
    prep = ["--patch-size", "161", "--stride", "60", "--val-fraction", "0.5", "--quiet"]
    _dwsfusion(env, "prep", "--source", str(tmp_path / "src"), "--out", "s3://fusion/sweep-patches", *prep)
    sweep = {
        "train": _two_steps("s3://fusion/sweep-patches", tracking),
        "space": {"lr_g": {"type": "grid", "values": [1e-3, 2e-3]}},
        "name": "on-s3",
        "storage_path": "s3://fusion/tune",
        "num_samples": 1,
        "scheduler": "fifo",
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    _dwsfusion(env, "tune", "--config", str(tmp_path / "sweep.yaml"), "--quiet")
    keys = [o["Key"] for o in s3_client(env).list_objects_v2(Bucket="fusion", Prefix="tune/on-s3/")["Contents"]]
    trials = {k.split("/")[3] for k in keys if re.match(r"tune/on-s3/trials/trial_[^/]+/checkpoint_", k)}
    assert len(trials) == 2, keys[:30]  # both trials checkpointed under the sweep's URI, not a folded local path
    assert not list(Path.cwd().glob("s3:*"))
