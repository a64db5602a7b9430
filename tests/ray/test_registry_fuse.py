"""Registry + batch fusion + serving: register (the command line's --checkpoint form) ->
promotion gate -> fuse archives by models:/name@alias (in a fresh process too) -> metrics.csv,
manifest, re-run no-op, resume; the registered model equals the checkpoint it came from, in
batch fusion and behind ``mlflow models serve``. One Ray session."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from dwsfusion.checkpoints import load_generator, save_generator  # noqa: E402
from dwsfusion.color import read_image, read_image_bytes  # noqa: E402
from dwsfusion.fuse import fuse_luma, load_pair  # noqa: E402
from dwsfusion.model import Generator  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402
from pipelines.batch.run import FuseJob, batch_fuse  # noqa: E402
from pipelines.config import RegisterSettings  # noqa: E402
from pipelines.registry import gate_decision, register_model  # noqa: E402
from tests.conftest import OFFICIAL_WEIGHTS, SHARED  # noqa: E402

METRICS = ("Qabf", "VIF", "SSIM")
DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))


def _dwsfusion(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ""}
    for default_store in ("MLFLOW_TRACKING_URI", "DWSFUSION_HOME"):
        env.pop(default_store, None)
    done = subprocess.run([DWSFUSION, *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)
    assert done.returncode == 0, f"dwsfusion {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def registry(tmp_path_factory, random_checkpoint):
    """'fuser' v1 from the command line (champion) in a fresh folder with the default store,
    then v2, a worse model, through the API."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'runs' / 'mlflow.db'}"
    done = _dwsfusion("register", "--checkpoint", str(random_checkpoint), "--name", "fuser", cwd=root)
    assert "registered fuser version 1 -> @champion: first champion" in done.stdout
    # the artifacts sit beside the store (runs/mlartifacts), not in ./mlruns of the folder it ran in
    assert not (root / "mlruns").exists() and (root / "runs" / "mlartifacts" / "dwsfusion-registry").is_dir()
    logged = mlflow.MlflowClient(uri).get_experiment_by_name("dwsfusion-registry").artifact_location
    assert Path(logged.removeprefix("file://")) == root / "runs" / "mlartifacts" / "dwsfusion-registry"
    assert list((root / "runs" / "mlartifacts").rglob("generator*")), "the registered weights are there"
    first = mlflow.MlflowClient(uri).get_model_version_by_alias("fuser", "champion")
    # A clearly worse generator: its output layer is zeroed, so it fuses to a flat image.
    torch.manual_seed(0)
    flat = Generator().eval()
    for p in flat.fusion.conv_out.parameters():
        torch.nn.init.zeros_(p)
    fuser = RegisterSettings(name="fuser")
    second = register_model(checkpoint=save_generator(flat, root / "flat.pt"), settings=fuser, tracking_uri=uri)
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
    assert second.alias == "challenger" and not second.promoted and "worse than the champion" in second.reason
    client = mlflow.MlflowClient(uri)
    assert client.get_model_version_by_alias("fuser", "champion").version == first.version
    tags = client.get_model_version("fuser", second.version).tags
    assert float(tags["metric.Qabf"]) == pytest.approx(second.metrics["Qabf"], abs=1e-6)
    assert "samples(count=6, seed=0)" in tags["eval_set"]


def test_gate_rule_directions():
    gate = RegisterSettings(gate_metrics=("Qabf", "MSE"), tolerance=0.01)
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


def _shards(samples_dir: Path, root: Path) -> dict[str, list[str]]:
    """The sample pairs as three shards, one per layout and format: shard name -> keys."""
    names = sorted(p.name for p in (samples_dir / "ir").glob("*.png"))
    with tarfile.open(root / "s0.tar", "w") as shard:  # WebDataset: <key>.ir.png + <key>.vi.png
        shard.add(samples_dir / "ir" / names[0], "k0.ir.png")
        shard.add(samples_dir / "vi" / names[0], "k0.vi.png")
    with tarfile.open(root / "s1.tar.gz", "w:gz") as shard:  # folders, every IR before any VIS
        shard.add(samples_dir / "ir" / names[1], "seq/ir/k1.png")
        shard.add(samples_dir / "vi" / names[1], "seq/vi/k1.png")
    with zipfile.ZipFile(root / "s2.zip", "w") as shard:
        shard.write(samples_dir / "ir" / names[2], "ir/k2.png")
        shard.write(samples_dir / "vi" / names[2], "vi/k2.png")
    return {"s0": ["k0"], "s1": ["seq/k1"], "s2": ["k2"]}


def test_shards_fuse_like_the_folder_form_and_a_killed_run_resumes(tmp_path, random_checkpoint, samples_dir):
    """Three shards (both layouts; tar, tar.gz, zip) by a glob -> one fused shard and one Parquet
    table each, the images those of the folder form. A run killed inside a shard (its outputs
    absent, its temporary files left) resumes: only that shard is redone, nothing hidden stays."""
    (tmp_path / "in").mkdir()
    shards = _shards(samples_dir, tmp_path / "in")
    out = tmp_path / "out"
    job = FuseJob(
        input=str(tmp_path / "in" / "s*"), output=str(out), checkpoint=str(random_checkpoint), actors=2, metrics=METRICS
    )
    first = batch_fuse(job, progress=False)
    assert (first.fused, first.skipped, first.failures) == (3, 0, [])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "metrics", "s0.tar", "s1.tar", "s2.tar"]
    fused = {}
    for name, keys in shards.items():
        with tarfile.open(out / f"{name}.tar") as tar:
            assert tar.getnames() == [f"{k}.fused.png" for k in keys]
            fused.update({k: tar.extractfile(f"{k}.fused.png").read() for k in keys})
    table = pq.read_table(out / "metrics").to_pandas()  # the folder reads as one table
    assert sorted(table["key"]) == sorted(fused) and table[list(METRICS)].notna().all().all()
    assert table["error"].isna().all() and set(table["shard"]) == {
        str(tmp_path / "in" / n) for n in ("s0.tar", "s1.tar.gz", "s2.zip")
    }
    folder = FuseJob(
        input=str(samples_dir), output=str(tmp_path / "folder"), checkpoint=str(random_checkpoint), metrics=()
    )
    assert batch_fuse(folder, progress=False).fused == 3
    assert not (tmp_path / "folder" / ".rows").exists()  # folded into metrics.csv
    again = batch_fuse(folder, progress=False)
    assert (again.fused, again.skipped) == (0, 3)
    stems = sorted(p.stem for p in (samples_dir / "ir").glob("*.png"))
    for stem, key in zip(stems, ["k0", "seq/k1", "k2"], strict=True):
        shard_image = read_image_bytes(fused[key], key)[0].astype(int)
        assert np.abs(shard_image - read_image(tmp_path / "folder" / f"{stem}.png")[0]).max() <= 1

    # The state a kill inside s1 leaves: no s1 outputs, its temporary files, the manifest 'running'.
    (out / "s1.tar").unlink()
    (out / "metrics" / "s1.parquet").unlink()
    (out / ".s1.tar.tmp-0123456789ab").write_bytes(b"half a shard")
    (out / "metrics" / ".s1.parquet.tmp-0123456789ab").write_bytes(b"half a table")
    resumed = batch_fuse(job, progress=False)
    assert (resumed.fused, resumed.skipped) == (1, 2) and resumed.manifest["counts"]["shards_done_before"] == 2
    assert resumed.manifest["status"] == "finished" and resumed.manifest["counts"]["fused"] == 3
    assert not [p for p in out.rglob(".*")], "hidden files left after a finished run"
    assert batch_fuse(job, progress=False).fused == 0
    other = job.model_copy(update={"metrics": ("SSIM",)})
    with pytest.raises(FileExistsError, match="another model or settings"):
        batch_fuse(other, progress=False)


def test_cli_fuses_a_tar_by_alias_in_a_fresh_process(registry, archives, tmp_path):
    uri, first, _ = registry
    root, stems = archives
    out = tmp_path / "fused.tar"
    cmd = [
        DWSFUSION,
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
    assert sorted(names) == sorted([f"night/{s}.png" for s in stems] + ["metrics.csv", "manifest.json"])
    assert manifest["model"]["version"] == first.version and manifest["counts"]["fused"] == len(stems)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tar"]  # no work folder left


def _release_or_random(random_checkpoint) -> tuple[Path, Path]:
    """The release weights and TNO when ../shared has them, else a random generator and samples."""
    if OFFICIAL_WEIGHTS.exists() and (SHARED / "data" / "TNO" / "ir").is_dir():
        return OFFICIAL_WEIGHTS, SHARED / "data" / "TNO"
    return random_checkpoint, None


def test_a_registered_checkpoint_fuses_like_the_checkpoint(tmp_path, random_checkpoint, samples_dir):
    """register --checkpoint, then fuse --model by alias: the same images as fuse --checkpoint
    (release weights on five TNO pairs when ../shared is there)."""
    weights, tno = _release_or_random(random_checkpoint)
    pairs = samples_dir
    if tno is not None:  # five TNO pairs (the whole set is compare's and the integration tests' job)
        pairs = tmp_path / "tno"
        for name in sorted(p.name for p in (tno / "ir").iterdir())[:5]:
            for side in ("ir", "vi"):
                (pairs / side).mkdir(parents=True, exist_ok=True)
                (pairs / side / name).symlink_to(tno / side / name)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _dwsfusion(
        "register", "--checkpoint", str(weights), "--name", "release", "--alias", "champion", "--tracking-uri", uri
    )
    by_alias = ["--model", "models:/release@champion", "--tracking-uri", uri, "--metrics", "none", "--quiet"]
    _dwsfusion("fuse", *by_alias, "--input", str(pairs), "--output", str(tmp_path / "by_alias"))
    folder = ["--ir", str(pairs / "ir"), "--vi", str(pairs / "vi"), "--out", str(tmp_path / "direct"), "--quiet"]
    _dwsfusion("fuse", "--checkpoint", str(weights), *folder)
    names = sorted(p.name for p in (tmp_path / "direct").glob("*.png"))
    assert names and names == sorted(p.name for p in (tmp_path / "by_alias").glob("*.png"))
    worst = max(
        np.abs(read_image(tmp_path / "by_alias" / n)[0].astype(int) - read_image(tmp_path / "direct" / n)[0]).max()
        for n in names
    )
    assert worst <= 1, f"registered model differs from its checkpoint by {worst} levels"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mlflow_models_serve_round_trip_equals_fuse(registry, tmp_path, random_checkpoint, samples_dir):
    """`mlflow models serve --env-manager local -m models:/fuser@champion` on a loopback port:
    the served fused luma equals the library's fusion of the same pair."""
    uri, first, _ = registry
    pair = find_pairs(samples_dir / "ir", samples_dir / "vi")[0][0]
    source = load_pair(pair)
    expected = fuse_luma(load_generator(random_checkpoint), source.ir, source.vis_y)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # uvicorn, mlflow: the venv's bin on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    command = ["mlflow", "models", "serve", "--env-manager", "local", "-m", "models:/fuser@champion", "--port"]
    server = subprocess.Popen(
        [*command, str(port), "--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                time.sleep(1)
        body = json.dumps({"inputs": {"ir": source.ir.tolist(), "vi": source.vis_y.tolist()}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            served = np.asarray(json.loads(response.read())["predictions"], np.float32)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert served.shape == expected.shape
    assert np.array_equal(np.floor(served * 255), np.floor(expected * 255))  # the same 8-bit image


def test_compare_a_registered_model_on_ray_actors_as_in_one_process(registry, random_checkpoint, samples_dir, tmp_path):
    """``dwsfusion compare`` takes models:/NAME@ALIAS; its Ray actors give exactly the numbers
    of one process, and --mlflow logs the means and the report beside the store."""
    from pipelines.compare import CompareJob, run_compare

    uri, first, _ = registry
    common = {
        "ir": str(samples_dir / "ir"),
        "vi": str(samples_dir / "vi"),
        "methods": ("champion=models:/fuser@champion", f"checkpoint={random_checkpoint}", "max=max"),
        "metrics": METRICS,
        "tracking_uri": uri,
        "figure_pairs": 1,
        "costs": False,
    }
    here = run_compare(CompareJob(**common, output=str(tmp_path / "here"), workers=1), progress=False)
    actors = run_compare(CompareJob(**common, output=str(tmp_path / "ray"), workers=2, log_mlflow=True), progress=False)
    assert actors.scores.rows == here.scores.rows and actors.board.pairs == here.board.pairs
    # v1 (the champion) was registered from this very checkpoint: the same numbers
    assert here.scores.rows["champion"] == here.scores.rows["checkpoint"]
    run = mlflow.MlflowClient(uri).get_run(actors.mlflow_run_id)
    assert run.data.metrics["max/Qabf"] == pytest.approx(here.board.entries["max"]["Qabf"].mean)
    assert run.data.params["method.champion"] == "models:/fuser@champion"
    logged = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(actors.mlflow_run_id)}
    assert {"compare.html", "leaderboard.csv", "crops.png"} <= logged


def test_an_attached_onnx_fuses_and_serves_without_torch(registry, mean_onnx, samples_dir, tmp_path):
    """export's attachment (here a stand-in graph, the mean of the sources) -> batch fusion with
    --engine onnxruntime by alias, and the pyfunc on ONNX Runtime in a process without torch."""
    from dwsfusion.errors import UsageError
    from pipelines.registry import attach_onnx, registered_onnx

    uri, _, second = registry
    mlflow.set_tracking_uri(uri)
    with pytest.raises(UsageError, match="dwsfusion export --model"):
        registered_onnx(f"models:/fuser/{second.version}")
    attached = attach_onnx("models:/fuser@champion", mean_onnx)
    assert registered_onnx("models:/fuser@champion").read_bytes() == mean_onnx.read_bytes(), attached
    job = FuseJob(
        input=str(samples_dir),
        output=str(tmp_path / "fused"),
        model="models:/fuser@champion",
        tracking_uri=uri,
        engine="onnxruntime",
        actors=1,
        metrics=("SSIM",),
    )
    result = batch_fuse(job, progress=False)
    assert result.fused == 3 and result.manifest["model"]["engine"] == "onnxruntime"
    for pair in find_pairs(samples_dir / "ir", samples_dir / "vi")[0]:
        source = load_pair(pair)
        expected = np.floor((source.ir + source.vis_y) / 2 * 255)
        if source.chroma is None:
            assert np.abs(read_image(tmp_path / "fused" / f"{pair.stem}.png")[0] - expected).max() <= 1
    # The pyfunc on ONNX Runtime where torch cannot be imported at all.
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({uri!r})\n"
        "model = mlflow.pyfunc.load_model('models:/fuser@champion', model_config={'engine': 'onnxruntime'})\n"
        "ir, vi = np.full((9, 11), 0.2, np.float32), np.full((9, 11), 0.6, np.float32)\n"
        "out = model.predict({'ir': ir, 'vi': vi})\n"
        "assert out.shape == (9, 11) and np.allclose(out, 0.4), out\n"
        "assert 'torch' not in {m for m in sys.modules if sys.modules[m] is not None}\n"
        "print('served without torch')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "served without torch" in done.stdout, done.stderr[-3000:]
