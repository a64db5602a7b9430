"""Registry + batch fusion: register -> promotion gate -> fuse archives by models:/name@alias
(in a fresh process too) -> metrics.csv, manifest, re-run no-op, resume. One Ray session."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from dwsfusion.checkpoints import save_generator  # noqa: E402
from dwsfusion.model import Generator  # noqa: E402
from pipelines.batch_fuse import FuseJob, batch_fuse  # noqa: E402
from pipelines.registry import GateConfig, gate_decision, register_model  # noqa: E402

METRICS = ("Qabf", "VIF", "SSIM")


@pytest.fixture(scope="module")
def registry(tmp_path_factory, random_checkpoint):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    first = register_model(checkpoint=random_checkpoint, name="fuser", tracking_uri=uri)
    # A clearly worse generator: its output layer is zeroed, so it fuses to a flat image.
    torch.manual_seed(0)
    flat = Generator().eval()
    for p in flat.fusion.conv_out.parameters():
        torch.nn.init.zeros_(p)
    second = register_model(checkpoint=save_generator(flat, root / "flat.pt"), name="fuser", tracking_uri=uri)
    return uri, first, second


@pytest.fixture(scope="module")
def archives(tmp_path_factory, samples_dir):
    root = tmp_path_factory.mktemp("archives")
    pairs = sorted(p.name for p in (samples_dir / "ir").glob("*.png"))
    with tarfile.open(root / "pairs.tar.gz", "w:gz") as archive:
        archive.add(samples_dir / "ir", "night/ir")
        archive.add(samples_dir / "vi", "night/vi")
    with zipfile.ZipFile(root / "pairs.zip", "w") as archive:
        for name in pairs:
            archive.write(samples_dir / "ir" / name, f"ir/{name}")
            archive.write(samples_dir / "vi" / name, f"vi/{name}")
        archive.writestr("../vi/escape.png", b"x")
    return root, [n.removesuffix(".png") for n in pairs]


def test_gate_promotes_first_and_refuses_a_worse_model(registry):
    uri, first, second = registry
    assert first.alias == "champion" and first.promoted
    assert second.alias == "challenger" and not second.promoted and "worse than the champion" in second.reason
    client = mlflow.MlflowClient(uri)
    assert client.get_model_version_by_alias("fuser", "champion").version == first.version
    tags = client.get_model_version("fuser", second.version).tags
    assert float(tags["metric.Qabf"]) == pytest.approx(second.metrics["Qabf"], abs=1e-6)
    assert "samples(count=6, seed=0)" in tags["eval_set"]


def test_gate_rule_directions():
    gate = GateConfig(metrics=("Qabf", "MSE"), tolerance=0.01)
    assert gate_decision({"Qabf": 0.496, "MSE": 100.5}, {"Qabf": 0.5, "MSE": 100.0}, gate)[0]
    passed, reason = gate_decision({"Qabf": 0.49, "MSE": 100.0}, {"Qabf": 0.5, "MSE": 100.0}, gate)
    assert not passed and "Qabf" in reason
    assert not gate_decision({"Qabf": 0.5, "MSE": 102.0}, {"Qabf": 0.5, "MSE": 100.0}, gate)[0]


def test_fuse_zip_by_alias_then_rerun_is_a_no_op(registry, archives, tmp_path):
    uri, first, _ = registry
    root, stems = archives
    job = FuseJob(
        input=str(root / "pairs.zip"),
        output=str(tmp_path / "fused.zip"),
        model="models:/fuser@champion",
        tracking_uri=uri,
        actors=2,
        metrics=METRICS,
    )
    result = batch_fuse(job, progress=False)
    assert result.fused == len(stems) and result.manifest["model"]["version"] == first.version
    assert any("escape.png" in f and "path traversal" in f for f in result.failures)
    with zipfile.ZipFile(tmp_path / "fused.zip") as packed:
        assert sorted(packed.namelist()) == sorted([f"{s}.png" for s in stems] + ["metrics.csv", "manifest.json"])
        rows = list(csv.DictReader(packed.read("metrics.csv").decode().splitlines()))
    assert [r["name"] for r in rows] == stems and all(float(r[m]) == float(r[m]) for r in rows for m in METRICS)
    assert not (tmp_path / "fused.zip.work").exists()
    again = batch_fuse(job, progress=False)
    assert again.fused == 0 and again.skipped == len(stems)


def test_fuse_resumes_a_killed_folder_run(registry, archives, tmp_path, random_checkpoint):
    root, stems = archives
    job = FuseJob(
        input=str(root / "pairs.tar.gz"),
        output=str(tmp_path / "out"),
        checkpoint=str(random_checkpoint),
        actors=1,
        metrics=(),
    )
    batch_fuse(job, progress=False)
    # Simulate a kill after the first pair: the other pairs' row marks and images are gone.
    for stem in stems[1:]:
        (tmp_path / "out" / ".rows" / f"{stem}.json").unlink()
        (tmp_path / "out" / f"{stem}.png").unlink()
    result = batch_fuse(job, progress=False)
    assert (result.fused, result.skipped) == (len(stems) - 1, 1)
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == stems
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_cli_fuses_a_tar_by_alias_in_a_fresh_process(registry, archives, tmp_path):
    uri, first, _ = registry
    root, stems = archives
    out = tmp_path / "fused.tar"
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "fuse",
        "--model",
        "models:/fuser@champion",
        "--input",
        str(root / "pairs.tar.gz"),
        "--output",
        str(out),
        "--tracking-uri",
        uri,
        "--actors",
        "1",
        "--metrics",
        "Qabf,VIF",
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"fused {len(stems)} pair(s) now" in done.stdout
    with tarfile.open(out) as packed:
        names = packed.getnames()
        manifest = json.loads(packed.extractfile("manifest.json").read())
    assert sorted(names) == sorted([f"{s}.png" for s in stems] + ["metrics.csv", "manifest.json"])
    assert manifest["model"]["version"] == first.version and manifest["counts"]["fused"] == len(stems)
