"""`ray job submit --working-dir .` of the quickstart workflow to a local Ray head started here
with token authentication (Ray >= 2.59), as docs/cluster.md shows it: refused without the
token, refused before any work without DWSFUSION_HOME (the working dir is Ray's temporary copy),
and with DWSFUSION_HOME it succeeds and every path it prints exists after the job. Minutes of
work: marked slow (``pytest -m slow tests/ray/test_cluster_job.py``)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

RAY_SESSION = False
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A local head with token authentication; the client's HOME holds the token."""
    home = tmp_path_factory.mktemp("client-home")
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_ADDRESS": ""}
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    dashboard, gcs = _free_port(), _free_port()
    start = [str(BIN / "ray"), "start", "--head", "--num-cpus", "4", "--port", str(gcs)]
    start += ["--dashboard-port", str(dashboard), "--include-dashboard", "true"]
    subprocess.run(start, env={**env, "RAY_AUTH_MODE": "token"}, check=True, capture_output=True, timeout=180)
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _submit(env: dict, address: str, *runtime_env: str, token: bool = True) -> subprocess.CompletedProcess:
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", *runtime_env, "--"]
    command += ["dwsfusion", "pipeline", "run", "--config", "configs/quickstart.yaml", "--quiet"]
    env = {**env, "RAY_AUTH_MODE": "token"} if token else {**env, "HOME": "/nonexistent"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


def test_submit_needs_the_token(head):
    env, address = head
    refused = _submit(env, address, token=False)
    assert refused.returncode != 0 and "Authentication required" in refused.stdout + refused.stderr


def test_a_relative_store_in_a_job_is_refused_before_any_work(head):
    env, address = head
    refused = _submit(env, address)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "set DWSFUSION_HOME" in out and "runtime_resources" in out


def test_the_quickstart_job_succeeds_and_its_paths_outlive_it(head, tmp_path):
    env, address = head
    runtime = json.dumps({"env_vars": {"DWSFUSION_HOME": str(tmp_path / "home")}})
    done = _submit(env, address, "--runtime-env-json", runtime)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in out, out[-4000:]
    printed = re.findall(r"(/\S+)", out.split("fused images:")[1])
    assert printed and all("runtime_resources" not in p for p in printed)
    for path in (p for p in printed if p.startswith(str(tmp_path))):
        assert Path(path.removeprefix("sqlite:///")).exists(), path
    assert (tmp_path / "home" / "runs" / "mlflow.db").is_file()
