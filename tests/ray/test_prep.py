"""The prep job on a local Ray (one session for the module): counts, coordinates,
alignment, split, rejected pairs, no-op rerun, resume after a kill, determinism; and the command
line where a dead Ray cluster left its address behind."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from data_prep import PrepConfig, load_manifest, patch_arrays, read_patches, run_prep, shard_uris  # noqa: E402
from data_prep.patches import patch_count, rescale  # noqa: E402
from dwsfusion.color import read_luma_u8, write_image  # noqa: E402
from dwsfusion.samples import write_samples  # noqa: E402

PATCH, STRIDE = 161, 40


@pytest.fixture(scope="module")
def msrs_source(tmp_path_factory):
    """MSRS layout: train/ with 6 good pairs and 5 bad ones, test/ with 2 good pairs."""
    root = tmp_path_factory.mktemp("msrs")
    write_samples(root / "train", count=6, seed=1)
    write_samples(root / "test", count=2, seed=2)
    for sub in ("ir", "vi"):  # MSRS test images have their own names
        for f in (root / "test" / sub).iterdir():
            f.rename(f.with_name(f.name.replace("scene", "test")))
    train = root / "train"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (241, 321), dtype=np.uint8)
    write_image(train / "ir" / "bad_size.png", noise)
    write_image(train / "vi" / "bad_size.png", noise[:200, :250])
    write_image(train / "ir" / "bad_unreadable.png", noise)
    (train / "vi" / "bad_unreadable.png").write_bytes(b"\x89PNG not really")
    write_image(train / "ir" / "bad_constant.png", np.full((241, 321), 100, np.uint8))
    write_image(train / "vi" / "bad_constant.png", noise)
    write_image(train / "ir" / "bad_small.png", noise[:150, :150])
    write_image(train / "vi" / "bad_small.png", noise[:150, :150])
    write_image(train / "ir" / "bad_lonely.png", noise)
    return root


@pytest.fixture(scope="module")
def prepared(msrs_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "shards"
    config = PrepConfig(
        source=str(msrs_source),
        out=str(out),
        patch_size=PATCH,
        stride=STRIDE,
        val_fraction=0.34,
        seed=0,
        pairs_per_task=2,
    )
    return config, run_prep(config, log=lambda *_: None)


def _rows(out, split):
    """Rows with their patches as (P, P) arrays (read with plain pyarrow, no Ray)."""
    rows = []
    for uri in shard_uris(out, split):
        table = pq.read_table(uri)
        arrays = patch_arrays(table, PATCH)
        for i, row in enumerate(table.select(["stem", "y", "x"]).to_pylist()):
            rows.append({**row, "ir": arrays["ir"][i], "vi": arrays["vi"][i]})
    return rows


def test_counts_coordinates_and_alignment(prepared, msrs_source):
    config, result = prepared
    manifest = load_manifest(config.out)
    assert set(result.counts) == {"train", "val", "test"}
    for source in manifest["sources"]:
        assert source["patches"] == patch_count(source["height"], source["width"], PATCH, STRIDE)
    for split, counts in result.counts.items():
        rows = _rows(config.out, split)
        assert len(rows) == counts["patches"] == sum(s["patches"] for s in manifest["sources"] if s["split"] == split)
        assert len({(r["stem"], r["y"], r["x"]) for r in rows}) == len(rows)  # no duplicates
    # Every row's IR and VIS patch are the source pixels at the row's coordinates.
    sources = {s["stem"]: s for s in manifest["sources"]}
    for row in _rows(config.out, "train")[::3]:
        src = sources[row["stem"]]
        ir, vi = read_luma_u8(src["ir"]), read_luma_u8(src["vi"])
        y, x = row["y"], row["x"]
        np.testing.assert_array_equal(np.asarray(row["ir"]), ir[y : y + PATCH, x : x + PATCH])
        np.testing.assert_array_equal(np.asarray(row["vi"]), vi[y : y + PATCH, x : x + PATCH])


def test_split_by_image_without_overlap(prepared):
    config, _ = prepared
    stems = {split: {r["stem"] for r in _rows(config.out, split)} for split in ("train", "val", "test")}
    assert stems["val"] and stems["train"] and stems["test"]
    assert not stems["train"] & stems["val"] and not (stems["train"] | stems["val"]) & stems["test"]


def test_bad_pairs_are_reported_with_reasons(prepared):
    config, result = prepared
    reasons = {r["stem"]: r["reason"] for r in result.rejected}
    assert set(reasons) == {"bad_size", "bad_unreadable", "bad_constant", "bad_small", "bad_lonely"}
    assert "size mismatch" in reasons["bad_size"]
    assert "not a readable image" in reasons["bad_unreadable"] and "bad_unreadable.png" in reasons["bad_unreadable"]
    assert "constant" in reasons["bad_constant"]
    assert "smaller than" in reasons["bad_small"]
    assert "no visible partner" in reasons["bad_lonely"]
    assert load_manifest(config.out)["rejected"] == result.rejected


def _files(out):
    return {p: os.stat(os.path.join(d, p)).st_mtime_ns for d, _, fs in os.walk(out) for p in fs}


def test_rerun_is_a_noop_and_a_killed_run_resumes_without_duplicates(prepared):
    config, first = prepared
    before = _files(config.out)
    again = run_prep(config, log=lambda *_: None)
    assert again.up_to_date and again.run_key == first.run_key and _files(config.out) == before

    # Simulate a kill during the val split: no manifest, val unfinished with a partial file.
    run_dir = os.path.join(config.out, first.run_key)
    os.remove(os.path.join(config.out, "manifest.json"))
    os.remove(os.path.join(run_dir, "val", "_SUCCESS"))
    with open(os.path.join(run_dir, "val", "shards", "val-00099-0.parquet"), "wb") as handle:
        handle.write(b"half a shard")
    train_files = {k: v for k, v in _files(os.path.join(run_dir, "train")).items()}
    resumed = run_prep(config, log=lambda *_: None)
    assert not resumed.up_to_date and resumed.counts == first.counts
    assert _files(os.path.join(run_dir, "train")) == train_files  # the finished split was kept
    assert not os.path.exists(os.path.join(run_dir, "val", "shards", "val-00099-0.parquet"))
    assert len(_rows(config.out, "val")) == first.counts["val"]["patches"]


def test_same_sources_give_the_same_shards_and_torch_batches(prepared, tmp_path):
    config, first = prepared
    other = PrepConfig(**{**config.__dict__, "out": str(tmp_path / "again")})
    second = run_prep(other, log=lambda *_: None)
    assert second.run_key == first.run_key
    for split in first.counts:
        a, b = shard_uris(config.out, split), shard_uris(other.out, split)
        assert [os.path.basename(u) for u in a] == [os.path.basename(u) for u in b]
        for x, y in zip(a, b, strict=True):
            assert pq.read_table(x).equals(pq.read_table(y))
    batch = next(iter(read_patches(config.out, "train").iter_torch_batches(batch_size=4)))
    assert batch["ir"].shape == (4, PATCH, PATCH) and str(batch["ir"].dtype) == "torch.uint8"
    shutil.rmtree(tmp_path / "again")


def test_scaled_prep_cuts_patches_from_the_resized_pairs(prepared, tmp_path):
    config, plain = prepared
    scaled = PrepConfig(**{**config.__dict__, "out": str(tmp_path / "scaled"), "scale": 0.75})
    result = run_prep(scaled, log=lambda *_: None)
    assert result.run_key != plain.run_key
    manifest = load_manifest(scaled.out)
    assert manifest["config"]["scale"] == 0.75
    sources = {s["stem"]: s for s in manifest["sources"]}
    for source in sources.values():  # sizes and patch grids are the resized ones
        height, width = read_luma_u8(source["ir"]).shape
        assert (source["height"], source["width"]) == (round(height * 0.75), round(width * 0.75))
        assert source["patches"] == patch_count(source["height"], source["width"], PATCH, STRIDE)
    for row in _rows(scaled.out, "train")[::3]:
        src = sources[row["stem"]]
        ir, vi = rescale(read_luma_u8(src["ir"]), 0.75), rescale(read_luma_u8(src["vi"]), 0.75)
        y, x = row["y"], row["x"]
        np.testing.assert_array_equal(np.asarray(row["ir"]), ir[y : y + PATCH, x : x + PATCH])
        np.testing.assert_array_equal(np.asarray(row["vi"]), vi[y : y + PATCH, x : x + PATCH])
    reasons = {r["stem"]: r["reason"] for r in result.rejected}
    assert "size mismatch" in reasons["bad_size"] and "241" in reasons["bad_size"]  # sizes as read
    assert "(after resizing by 0.75)" in reasons["bad_small"]
    shutil.rmtree(tmp_path / "scaled")


def test_fit_patch_keeps_the_pairs_a_scale_would_make_too_small(prepared, tmp_path):
    config, plain = prepared
    kept = {s["stem"] for s in load_manifest(config.out)["sources"]}
    fitted = PrepConfig(**{**config.__dict__, "out": str(tmp_path / "fitted"), "scale": 0.5, "fit_patch": True})
    result = run_prep(fitted, log=lambda *_: None)
    manifest = load_manifest(fitted.out)
    assert manifest["config"]["fit_patch"] is True and result.run_key != plain.run_key
    sources = {s["stem"]: s for s in manifest["sources"]}
    assert set(sources) == kept  # at 0.5 every sample pair is under 161 px: each one is fitted instead
    for source in sources.values():
        height, width = read_luma_u8(source["ir"]).shape
        factor = source["scale"]  # the pair's own factor, recorded
        assert 0.5 < factor < 1 and min(source["height"], source["width"]) == PATCH
        assert (source["height"], source["width"]) == (round(height * factor), round(width * factor))
    row = _rows(fitted.out, "train")[0]
    ir = rescale(read_luma_u8(sources[row["stem"]]["ir"]), sources[row["stem"]]["scale"])
    np.testing.assert_array_equal(np.asarray(row["ir"]), ir[row["y"] : row["y"] + PATCH, row["x"] : row["x"] + PATCH])
    reasons = {r["stem"]: r["reason"] for r in result.rejected}
    assert reasons["bad_small"] == "150x150 is smaller than the 161px patch"  # never enlarged
    shutil.rmtree(tmp_path / "fitted")


def test_the_cli_starts_its_own_ray_where_a_dead_cluster_left_its_address(msrs_source, tmp_path):
    """A `ray start` or test cluster killed before `ray stop` leaves ray_current_cluster behind;
    a bare ray.init() would join that address and refuse num_cpus. The command starts its own."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    try:
        os.makedirs(os.path.join(ray_tmp, "ray"))
        with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as stale:
            stale.write("127.0.0.1:9")  # nothing listens there
        env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""}
        out = tmp_path / "shards"
        cli = [str(Path(sys.executable).with_name("dwsfusion")), "prep", "--source", str(msrs_source / "train")]
        cli += ["--out", str(out), "--patch-size", str(PATCH), "--stride", str(STRIDE), "--quiet"]
        done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert load_manifest(str(out))["counts"]["train"]["patches"] > 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
