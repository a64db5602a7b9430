"""The pipeline against real servers on loopback ports, as on a cluster: an S3-compatible object
store (moto's server, given to every tool through ``AWS_ENDPOINT_URL``) and an MLflow tracking
server with proxied artifacts. ``prep`` writes its shards to ``s3://``; training keeps its Ray
Train storage there; batch fusion reads an archive from ``s3://`` and refuses an ``s3://`` output
before any work; registration, the promotion gate and fusion by ``models:/NAME@ALIAS`` go
through the MLflow server, and the commands say how to see it (the server's URL)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("moto")

RAY_SESSION = False  # every Ray here is a subprocess's own
# Minutes of servers or simulated nodes: outside the default suite (docs/testing.md).
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DWSFUSION = str(BIN / "dwsfusion")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error: the server answers
                return
            assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else "died"
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("servers")
    s3_port, mlflow_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RAY_ADDRESS": "",
    }
    moto = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tracking = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
        + [
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        env={**env, "PATH": f"{BIN}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait(f"http://127.0.0.1:{s3_port}/", moto)
        _wait(f"http://127.0.0.1:{mlflow_port}/health", tracking)

        _s3(env).create_bucket(Bucket="fusion")
        yield root, env, f"http://127.0.0.1:{mlflow_port}"
    finally:
        for process in (moto, tracking):
            process.terminate()
            process.wait(timeout=30)


def _s3(env: dict):
    """This process's S3 client on the local server (the environment above is the subprocesses')."""
    import boto3

    keys = {k.lower(): env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"], **keys)


def _dwsfusion(env: dict, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([DWSFUSION, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == expect, f"dwsfusion {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_prep_and_training_keep_their_data_in_object_storage(servers, tmp_path):
    root, env, tracking = servers
    _dwsfusion(env, "samples", "--out", str(tmp_path / "src"), "--count", "4", "--seed", "3")
    prep = ["--patch-size", "161", "--stride", "60", "--val-fraction", "0.5", "--quiet"]
    _dwsfusion(env, "prep", "--source", str(tmp_path / "src"), "--out", "s3://fusion/patches", *prep)
    config = {
        "data": "s3://fusion/patches",
        "storage_path": "s3://fusion/train",
        "name": "on-s3",
        "num_workers": 1,
        "epochs": 1,
        "batch_size": 2,
        "max_steps_per_epoch": 2,
        "materialize": True,
        "val_images": 2,
        "mlflow_tracking_uri": tracking,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    done = _dwsfusion(env, "train", "--config", str(tmp_path / "train.yaml"), "--quiet")
    assert "last checkpoint: s3://fusion/train/on-s3/checkpoint_" in done.stdout
    assert f"open {tracking}" in done.stdout  # a server is seen at its own URL, not with `mlflow ui`
    checkpoint = re.search(r"last checkpoint: (\S+)", done.stdout).group(1)
    code = "import sys; from pipelines.train import load_train_state; print(load_train_state(sys.argv[1])['epoch'])"
    read = subprocess.run([sys.executable, "-c", code, checkpoint], env=env, capture_output=True, text=True)
    assert read.stdout.strip() == "0", read.stderr[-2000:]  # the printed URI reads back
    run_id = re.search(r"MLflow run:\s+(\w+)", done.stdout).group(1)

    keys = [o["Key"] for o in _s3(env).list_objects_v2(Bucket="fusion")["Contents"]]
    assert "patches/manifest.json" in keys and any(k.startswith("train/on-s3/checkpoint_") for k in keys)

    # Registration and the gate through the server, then fusion by alias of an archive read from s3://
    done = _dwsfusion(env, "register", "--run", run_id, "--name", "on-s3", "--tracking-uri", tracking)
    assert "registered on-s3 version 1 -> @champion" in done.stdout
    archive = tmp_path / "night.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tmp_path / "src" / "ir", "night/ir")
        packed.add(tmp_path / "src" / "vi", "night/vi")
    _s3(env).upload_file(str(archive), "fusion", "in/night.tar.gz")
    by_alias = ["--model", "models:/on-s3@champion", "--tracking-uri", tracking, "--metrics", "Qabf", "--quiet"]
    done = _dwsfusion(
        env, "fuse", *by_alias, "--input", "s3://fusion/in/night.tar.gz", "--output", str(tmp_path / "out")
    )
    assert "fused 4 pair(s) now" in done.stdout and len(list((tmp_path / "out").glob("*.png"))) == 4
    refused = _dwsfusion(
        env, "fuse", *by_alias, "--input", "s3://fusion/in/night.tar.gz", "--output", "s3://fusion/out", expect=2
    )
    assert "s3://fusion/out" in refused.stderr and "copy it to object storage" in refused.stderr
    client = mlflow.MlflowClient(tracking)
    assert client.get_model_version_by_alias("on-s3", "champion").run_id == run_id
