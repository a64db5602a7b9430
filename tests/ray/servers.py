"""Servers on loopback ports for the tests that need them: a free port, waiting for a server to
answer, and moto's S3 server (the environment that points every tool at it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120, log: Path | None = None) -> None:
    """Until ``url`` answers; a server that died meanwhile fails with the end of its ``log``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error: the server answers
                return
            assert process.poll() is None, log.read_text()[-3000:] if log else "the server died"
            time.sleep(0.5)
    raise TimeoutError(url)


def server_log(name: str) -> Path:
    """Where a server's output goes: a file, never a pipe nobody reads (a server whose request
    log fills a pipe blocks in mid-request: moto's did, after about a thousand requests)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-")) / "server.log"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # moto's server can sit in a request: do not fail the tests for it
        process.kill()
        process.wait(timeout=30)


@contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server on a free loopback port; yields the variables that point a client at it."""
    port, log = free_port(), server_log("moto")
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/", process, log=log)
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", **S3_KEYS}
    finally:
        stop(process)


def s3_client(env: dict):
    """This process's S3 client on the local server (``env``: what ``moto_s3`` yields)."""
    import boto3

    keys = {k.lower(): env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"], **keys)
