"""The prep job on Ray Data: pairs -> (decode, validate, Y, patches) -> Parquet shards.

Layout under ``out`` (a local path or a pyarrow URI)::

    manifest.json                       written last: the commit; lists the dataset
    <run_key>/<split>/shards/*.parquet  one shard per Ray task (``pairs_per_task`` pairs)
    <run_key>/<split>/_reports/*.json   per-pair outcome written by the tasks
    <run_key>/<split>/_SUCCESS          the split finished (a rerun resumes after it)

``run_key`` hashes the config and every source file's checksum, so the same config on the
same sources is a no-op, and a changed one writes beside the old data until it commits.
Row schema: stem (string), y, x (int32, top-left corner in the source), ir, vi
(fixed_size_binary(patch*patch), row-major uint8). ``reader.read_patches`` views them as
(N, P, P) arrays inside Ray Data, so ``iter_torch_batches`` yields uint8 tensors and the
training loop decodes nothing. (Measured: list-encoded tensor columns wrote ~30x slower.)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dwsfusion.color import ImageError, read_luma_u8

from .config import PrepConfig
from .manifest import MANIFEST, MANIFEST_VERSION
from .patches import grid_positions, pair_problem, pair_scale, patch_views, rescale
from .ray_session import ensure_ray
from .sources import SourcePair, assign_splits, discover, fingerprint
from .storage import filesystem, read_json, write_json

RUN_KEY = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class PrepResult:
    out: str
    run_key: str
    up_to_date: bool  # True: nothing was done, the manifest already matched
    counts: dict[str, dict[str, int]]  # split -> {"pairs": n, "patches": n, "shards": n}
    rejected: list[dict]


def extract_batch(
    batch: dict,
    patch: int,
    stride: int,
    report_dir: str,
    out_uri: str,
    scale: float = 1.0,
    fit_patch: bool = False,
) -> pa.Table:
    """Ray Data UDF: a batch of pairs -> patch rows; writes the batch's per-pair report.
    A bad pair becomes a report entry with its reason, never an exception. With ``scale`` the
    pairs are resized first (patch positions and the reported size are then the resized ones;
    ``fit_patch``: see ``pair_scale``, and the report gives a pair's own factor)."""
    stems, ys, xs, irs, vis, report = [], [], [], [], [], []
    for stem, ir_path, vi_path in zip(batch["stem"], batch["ir"], batch["vi"], strict=True):
        entry = {"stem": str(stem), "files": [str(ir_path), str(vi_path)]}
        try:
            ir, vi = read_luma_u8(str(ir_path)), read_luma_u8(str(vi_path))
            matched = ir.shape == vi.shape  # a size mismatch is reported as read
            factor = pair_scale(*ir.shape, scale, patch, fit_patch) if matched else scale
            resized = factor != 1.0 and matched
            if resized:
                ir, vi = rescale(ir, factor), rescale(vi, factor)
            if factor != scale:
                entry["scale"] = factor
            problem = pair_problem(ir, vi, patch)  # one validation pass, on the pixels training sees
            if problem and resized:
                problem += f" (after resizing by {factor:g})"
        except ImageError as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - report anything else with its type, keep going
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            report.append({**entry, "reason": problem})
            continue
        positions = grid_positions(*ir.shape, patch, stride)
        stems += [str(stem)] * len(positions)
        ys += [y for y, _ in positions]
        xs += [x for _, x in positions]
        irs += patch_views(ir, positions, patch)  # views: copied once, by patch_table
        vis += patch_views(vi, positions, patch)
        report.append({**entry, "height": ir.shape[0], "width": ir.shape[1], "patches": len(positions)})
    fs, _ = filesystem(out_uri)
    name = hashlib.sha1("|".join(e["stem"] for e in report).encode()).hexdigest()[:16]
    write_json(fs, f"{report_dir}/{name}.json", {"pairs": report})
    return patch_table(stems, ys, xs, irs, vis, patch)


def patch_table(stems, ys, xs, irs, vis, patch: int) -> pa.Table:
    """Rows of the shard schema. Patches are fixed_size_binary(patch*patch), row-major uint8:
    Parquet stores them as flat byte strings (tens of times faster to write and read than
    list-encoded tensors), and ``reader.read_patches`` views them as (N, P, P) arrays."""

    def column(parts: list[np.ndarray]) -> pa.Array:
        data = np.stack(parts) if parts else np.empty((0, patch, patch), np.uint8)
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(patch * patch), len(data), [None, pa.py_buffer(data)])

    return pa.table(
        {
            "stem": pa.array(stems, pa.string()),
            "y": pa.array(ys, pa.int32()),
            "x": pa.array(xs, pa.int32()),
            "ir": column(irs),
            "vi": column(vis),
        }
    )


def _shard_namer(split: str):
    from ray.data.datasource import FilenameProvider  # Ray: heavy and optional, imported on use

    class SplitShardNames(FilenameProvider):
        """``<split>-<task>``: task i writes input block i (a fixed, sorted group of pairs), so
        the same sources give the same names and contents whatever the scheduling."""

        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"{split}-{task_index:05d}"

    return SplitShardNames()


def _run_split(config: PrepConfig, pairs: list[SourcePair], split_dir: str, fs: pafs.FileSystem) -> None:
    import ray  # Ray: heavy and optional, imported on use

    items = [{"stem": p.stem, "ir": p.ir, "vi": p.vi} for p in pairs]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / config.pairs_per_task)))
    dataset = dataset.map_batches(
        extract_batch,
        batch_size=None,  # one block (pairs_per_task pairs) per call
        fn_kwargs={
            "patch": config.patch_size,
            "stride": config.stride,
            "scale": config.scale,
            "fit_patch": config.fit_patch,
            "report_dir": f"{split_dir}/_reports",
            "out_uri": config.out,
        },
    )
    fs.create_dir(f"{split_dir}/_reports", recursive=True)
    split = split_dir.rsplit("/", 1)[-1]
    # OVERWRITE: the split folder is new (an interrupted attempt was deleted above).
    dataset.write_parquet(
        f"{split_dir}/shards",
        filesystem=fs,
        filename_provider=_shard_namer(split),
        mode=ray.data.SaveMode.OVERWRITE,
        use_dictionary=["stem"],  # patches are unique: dictionary encoding would only cost time
    )


def _collect(fs: pafs.FileSystem, root: str, run_key: str, split: str) -> tuple[list[dict], list[dict]]:
    """(report entries, shards) of one finished split."""
    split_dir = f"{root}/{run_key}/{split}"
    reports = []
    for info in fs.get_file_info(pafs.FileSelector(f"{split_dir}/_reports")):
        if info.path.endswith(".json"):
            reports += read_json(fs, info.path)["pairs"]
    shards = []
    selector = pafs.FileSelector(f"{split_dir}/shards", allow_not_found=True)
    for info in sorted(fs.get_file_info(selector), key=lambda i: i.path):
        if info.path.endswith(".parquet"):
            with fs.open_input_file(info.path) as handle:
                rows = pq.read_metadata(handle).num_rows
            shards.append({"split": split, "path": f"{run_key}/{split}/shards/{info.base_name}", "rows": rows})
    return reports, shards


def run_prep(config: PrepConfig, log=print) -> PrepResult:
    """Prepare (or verify, or resume) the patch shards of ``config.source`` under ``config.out``."""
    pairs, rejected = discover(config.source)
    pairs = assign_splits(fingerprint(pairs), config.val_fraction, config.seed)
    identity = {
        "version": MANIFEST_VERSION,
        "config": config.identity(),
        "sources": [(p.split, p.stem, p.ir_sha256, p.vi_sha256) for p in pairs],
    }
    run_key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    fs, root = filesystem(config.out)
    fs.create_dir(root, recursive=True)

    manifest = read_json(fs, f"{root}/{MANIFEST}")
    if manifest and manifest.get("run_key") == run_key:
        log(f"{config.out}: up to date (run {run_key}); nothing to do")
        return PrepResult(config.out, run_key, True, manifest["counts"], manifest["rejected"])

    ensure_ray(dashboard=False)  # the one place prep starts a session (joins RAY_ADDRESS when set)
    splits = sorted({p.split for p in pairs})
    for split in splits:
        split_dir = f"{root}/{run_key}/{split}"
        if fs.get_file_info(f"{split_dir}/_SUCCESS").type == pafs.FileType.File:
            log(f"{split}: already extracted by an interrupted run, kept")
            continue
        if fs.get_file_info(split_dir).type == pafs.FileType.Directory:
            fs.delete_dir(split_dir)  # an interrupted attempt: start the split again
        members = [p for p in pairs if p.split == split]
        log(f"{split}: extracting patches from {len(members)} pair(s)")
        _run_split(config, members, split_dir, fs)
        with fs.open_output_stream(f"{split_dir}/_SUCCESS") as handle:
            handle.write(b"")

    sources, shards, counts = [], [], {}
    by_key = {(p.split, p.stem): p for p in pairs}
    for split in splits:
        reports, split_shards = _collect(fs, root, run_key, split)
        shards += split_shards
        good = [r for r in reports if "reason" not in r]
        rejected += [{"split": split, **r} for r in reports if "reason" in r]
        for r in good:
            p = by_key[(split, r["stem"])]
            sizes = {k: r[k] for k in ("height", "width", "patches", "scale") if k in r}  # scale: fit_patch's own
            sources.append({**asdict(p), **sizes})
        counts[split] = {
            "pairs": len(good),
            "patches": sum(r["patches"] for r in good),
            "shards": len(split_shards),
        }
        assert counts[split]["patches"] == sum(s["rows"] for s in split_shards), f"{split}: rows != reports"
    manifest = {
        "version": MANIFEST_VERSION,
        "run_key": run_key,
        "config": {**config.identity(), "source": config.source, "pairs_per_task": config.pairs_per_task},
        "schema": {
            "stem": "string",
            "y": "int32",
            "x": "int32",
            "ir": "uint8[patch, patch]",
            "vi": "uint8[patch, patch]",
        },
        "counts": counts,
        "sources": sorted(sources, key=lambda s: (s["split"], s["stem"])),
        "rejected": sorted(rejected, key=lambda r: (r["split"], r["stem"])),
        "shards": shards,
    }
    write_json(fs, f"{root}/{MANIFEST}", manifest)  # the commit
    _collect_garbage(fs, root, keep=run_key)
    for r in manifest["rejected"]:
        log(f"rejected [{r['split']}] {r['stem']}: {r['reason']}")
    log(f"{config.out}: " + ", ".join(f"{s} {c['pairs']} pairs / {c['patches']} patches" for s, c in counts.items()))
    return PrepResult(config.out, run_key, False, counts, manifest["rejected"])


def _collect_garbage(fs: pafs.FileSystem, root: str, keep: str) -> None:
    """Remove other runs' folders (only names that are run keys: never a user's files)."""
    for info in fs.get_file_info(pafs.FileSelector(root)):
        if info.type == pafs.FileType.Directory and RUN_KEY.match(info.base_name) and info.base_name != keep:
            fs.delete_dir(info.path)
