"""Archive shards in, shards out: the Ray-free half of sharded batch fusion.

    inputs (archives, globs, folders or s3://, gs:// prefixes of them)
      -> ``list_shards``: their .tar / .tar.gz / .tgz / .zip shards     [driver: a listing only]
      -> ``fuse_shard``, one call per shard, on whichever worker runs it:
         stream the shard's members -> pair them -> decode (threads) -> fuse (one forward per
         same-size batch) -> encode + score (threads) -> ``DST/<shard>.tar`` (WebDataset:
         ``<key>.fused.png``) and ``DST/metrics/<shard>.parquet`` (one row per pair)

Nothing is copied to or extracted on the driver: a worker reads its shard as a stream
(``pyarrow.fs``: local paths, S3, GCS). Both outputs are written under temporary names and
renamed when complete, the Parquet file first: a shard is done when ``<shard>.tar`` exists, so
a killed run leaves nothing that looks complete, and a rerun skips the finished shards and
clears the temporary files of those it redoes. The shard's summary (counts, refused members,
failed pairs) rides in the Parquet file's metadata, where the driver's manifest reads it.
"""

from __future__ import annotations

import fnmatch
import io
import json
import tarfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data_prep.manifest import filesystem
from dwsfusion.color import ImageError, encode_png, read_image_bytes
from dwsfusion.errors import UsageError
from dwsfusion.evaluate import score_images, to_gray_u8
from dwsfusion.fuse import SourcePair, compose_output, fuse_sources, fuser_device, source_pair
from dwsfusion.tiling import TileConfig

from .archives import ArchiveLimits, MemberPair, Refused, archive_kind, pair_members, tar_members, zip_members

FUSED_SUFFIX = ".fused.png"  # output member: <key>.fused.png (WebDataset field "fused.png")
METRICS_FOLDER = "metrics"  # DST/metrics/<shard>.parquet: pd.read_parquet("DST/metrics") reads them all
SUMMARY_KEY = b"dwsfusion.shard"  # the Parquet metadata entry holding the shard's summary
MAX_LISTED = 1000  # refusals and failures listed per shard (all are counted)


# ------------------------------------------------------------------ where things are
def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def _as_location(given: str, path: str) -> str:
    """A pyarrow path back to what a worker opens: the URI's scheme again, or a local path."""
    return f"{given.split('://', 1)[0]}://{path}" if "://" in given and not given.startswith("file://") else path


def list_shards(inputs: Sequence[str]) -> list[str]:
    """Every archive the inputs name, in order: an archive, a glob of archives (its last path
    part: ``night/*.tar``) or a folder / object prefix holding archives (not recursive). A
    listing, nothing is read; a UsageError names an input that gives none."""
    shards: list[str] = []
    for given in inputs:
        fs, path = filesystem(given)
        parent, _, last = path.rstrip("/").rpartition("/")
        if any(c in last for c in "*?["):
            infos = fs.get_file_info(pafs.FileSelector(parent or "/", allow_not_found=True))
            found = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.base_name, last)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise UsageError(f"{given}: not found")
            found = [info.path] if info.is_file else [i.path for i in fs.get_file_info(pafs.FileSelector(path))]
            if info.is_file and archive_kind(info.path) is None:
                raise UsageError(f"{given}: not a .tar, .tar.gz, .tgz or .zip archive")
        archives = sorted(p for p in found if archive_kind(p) is not None)
        if not archives:
            raise UsageError(f"{given}: holds no .tar, .tar.gz, .tgz or .zip archive")
        shards += [_as_location(given, p) for p in archives]
    return shards


def shard_name(shard: str) -> str:
    """``s3://b/night-000001.tar.gz`` -> ``night-000001``: the name of its outputs."""
    base = shard.rstrip("/").rpartition("/")[2]
    return next(base[: -len(s)] for s in (".tar.gz", ".tgz", ".tar", ".zip") if base.lower().endswith(s))


def shard_names(shards: Sequence[str]) -> dict[str, str]:
    """Output name -> shard; two shards of one name would write the same output (refused)."""
    names: dict[str, str] = {}
    for shard in shards:
        name = shard_name(shard)
        if name in names:
            raise UsageError(f"{names[name]} and {shard} would both write {name}.tar: rename one, or fuse them apart")
        names[name] = shard
    return names


def finished_shards(output: str) -> set[str]:
    """Names of the shards whose outputs exist in ``output`` (their .tar and their Parquet)."""
    fs, root = filesystem(output)
    tars = {i.base_name[:-4] for i in _listing(fs, root) if i.is_file and i.base_name.endswith(".tar")}
    tables = {i.base_name[:-8] for i in _listing(fs, _join(root, METRICS_FOLDER)) if i.base_name.endswith(".parquet")}
    return tars & tables


def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def read_summary(output: str, name: str) -> dict:
    """A finished shard's summary, from its Parquet metadata (the footer only is read)."""
    fs, root = filesystem(output)
    schema = pq.read_schema(_join(_join(root, METRICS_FOLDER), f"{name}.parquet"), filesystem=fs)
    return json.loads(schema.metadata[SUMMARY_KEY])


def read_metrics(output: str, names: Iterable[str]) -> pa.Table:
    """The per-pair rows of the named shards, in that order."""
    fs, root = filesystem(output)
    tables = [pq.read_table(_join(_join(root, METRICS_FOLDER), f"{n}.parquet"), filesystem=fs) for n in names]
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) if tables else pa.table({})


def iter_fused(output: str, name: str) -> Iterator[tuple[str, bytes]]:
    """(key, PNG bytes) of a finished output shard, streamed."""
    fs, root = filesystem(output)
    with fs.open_input_stream(_join(root, f"{name}.tar")) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.isfile() and info.name.endswith(FUSED_SUFFIX):
                yield info.name[: -len(FUSED_SUFFIX)], tar.extractfile(info).read()


# ------------------------------------------------------------------ writing
def _temp_path(path: str) -> str:
    folder, _, base = path.rpartition("/")
    return f"{folder}/.{base}.tmp-{uuid.uuid4().hex[:12]}"


def clear_temporaries(fs: pafs.FileSystem, folder: str, base: str | None = None) -> int:
    """Remove what killed runs left: ``.<base>.tmp-*`` (every base when None) in ``folder``."""
    prefix = f".{base}.tmp-" if base else "."
    stale = [
        i.path for i in _listing(fs, folder) if i.is_file and i.base_name.startswith(prefix) and ".tmp-" in i.base_name
    ]
    for path in stale:
        with suppress(OSError):
            fs.delete_file(path)
    return len(stale)


@contextmanager
def _output(fs: pafs.FileSystem, path: str, publish: bool = True) -> Iterator[tuple[pa.NativeFile, str]]:
    """A stream to a temporary name beside ``path``; moved to ``path`` when written (with
    ``publish``; else the caller moves it), deleted if anything fails. On object storage the
    move is a server-side copy: the final key appears whole or not at all."""
    tmp = _temp_path(path)
    try:
        with fs.open_output_stream(tmp) as stream:
            yield stream, tmp
        if publish:
            fs.move(tmp, path)
    except BaseException:
        with suppress(OSError):
            fs.delete_file(tmp)
        raise


def _metrics_table(rows: list[dict], metrics: Sequence[str], summary: dict) -> pa.Table:
    columns = {
        "shard": pa.array([r["shard"] for r in rows], pa.string()),
        "key": pa.array([r["key"] for r in rows], pa.string()),
        **{m: pa.array([r.get(m) for r in rows], pa.float64()) for m in metrics},
        "seconds": pa.array([r.get("seconds") for r in rows], pa.float64()),
        "error": pa.array([r.get("error") for r in rows], pa.string()),
    }
    return pa.table(columns).replace_schema_metadata({SUMMARY_KEY: json.dumps(summary).encode()})


# ------------------------------------------------------------------ one shard
@dataclass(frozen=True)
class ShardSettings:
    """What a shard's fusion needs beyond the model (picklable: it travels to the actors)."""

    metrics: tuple[str, ...] = ()
    rounding: str = "truncate"
    tiles: TileConfig = TileConfig()
    precision: str = "fp32"
    limits: ArchiveLimits = ArchiveLimits()
    batch_size: int = 8  # pairs per forward (same-size pairs share it)
    threads: int = 1  # decode / encode / metric threads beside the forward


@contextmanager
def _shard_members(shard: str) -> Iterator[Iterator]:
    """The shard opened (an error here fails the shard: missing, unreachable) and its members
    as a stream (an error while reading them is a refusal: the pairs read so far are kept)."""
    fs, path = filesystem(shard)
    if archive_kind(shard) == "zip":  # a zip's directory is at its end: a seekable file
        handle = fs.open_input_file(path)
        members = zip_members(handle)
    else:
        handle = fs.open_input_stream(path, compression=None)
        members = tar_members(handle)
    with handle:
        yield members


def _decode(pair: MemberPair, scored: bool) -> tuple[SourcePair, tuple | None, float]:
    started = time.perf_counter()
    ir = read_image_bytes(pair.ir, pair.ir_member)
    vi = read_image_bytes(pair.vi, pair.vi_member)
    source = source_pair(pair.key, ir, vi, pair.ir_member, pair.vi_member)
    grays = (to_gray_u8(*ir), to_gray_u8(*vi)) if scored else None
    return source, grays, time.perf_counter() - started


def _finish(source: SourcePair, luma: np.ndarray, grays, settings: ShardSettings, device: str) -> tuple[bytes, dict]:
    image = compose_output(source, luma, settings.rounding)
    scores = score_images(*grays, image, settings.metrics, device) if grays else {}
    return encode_png(image, source.name), scores


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fuse_shard(
    generator,
    shard: str,
    output: str,
    settings: ShardSettings,
    on_progress: Callable[[int], None] = lambda done: None,
) -> dict:
    """Fuse every pair of ``shard`` into ``output``/<name>.tar and its metrics into
    ``output``/metrics/<name>.parquet (see the module docstring). Decoding of the next batch
    and encoding of the last run on ``settings.threads`` threads while a batch is fused.
    ``on_progress(pairs done so far)`` is called as pairs are written. Returns the summary."""
    started = time.perf_counter()
    name = shard_name(shard)
    fs, root = filesystem(output)
    metrics_dir = _join(root, METRICS_FOLDER)
    for folder, base in ((root, f"{name}.tar"), (metrics_dir, f"{name}.parquet")):
        fs.create_dir(folder, recursive=True)
        clear_temporaries(fs, folder, base)  # a killed run's
    device = fuser_device(generator)
    refused: list[Refused] = []
    rows: list[dict] = []
    pool = ThreadPoolExecutor(max(1, settings.threads), thread_name_prefix="shard-io")
    scored = bool(settings.metrics)
    decoding: deque[list[tuple[MemberPair, Future]]] = deque()
    writing: deque[tuple[MemberPair, Future, float]] = deque()

    def write_done(tar: tarfile.TarFile, keep: int) -> None:
        while len(writing) > keep:
            pair, future, share = writing.popleft()
            try:
                png, scores = future.result()
            except (ImageError, OSError) as exc:
                rows.append({"shard": shard, "key": pair.key, "error": str(exc)})
                continue
            info = tarfile.TarInfo(pair.key + FUSED_SUFFIX)
            info.size, info.mtime, info.mode = len(png), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(png))
            rows.append({"shard": shard, "key": pair.key, **scores, "seconds": share})
            on_progress(len(rows))

    def fuse_oldest(tar: tarfile.TarFile) -> None:
        batch = decoding.popleft()
        decoded = []
        for pair, future in batch:
            try:
                decoded.append((pair, *future.result()))
            except (ImageError, OSError) as exc:
                rows.append({"shard": shard, "key": pair.key, "error": str(exc)})
                on_progress(len(rows))
        forward = time.perf_counter()
        fused = fuse_sources(generator, [d[1] for d in decoded], settings.tiles, settings.precision)
        forward = (time.perf_counter() - forward) / max(1, len(decoded))
        for (pair, source, grays, decode_s), luma in zip(decoded, fused, strict=True):
            writing.append((pair, pool.submit(_finish, source, luma, grays, settings, device), decode_s + forward))
        write_done(tar, keep=2 * settings.batch_size)  # encoding runs a batch behind

    tar_path = _join(root, f"{name}.tar")
    try:
        with _shard_members(shard) as members, _output(fs, tar_path, publish=False) as (stream, tar_tmp):
            with tarfile.open(fileobj=stream, mode="w|") as tar:
                pairs = pair_members(members, settings.limits, refused)
                for batch in _batches(pairs, settings.batch_size):
                    decoding.append([(pair, pool.submit(_decode, pair, scored)) for pair in batch])
                    if len(decoding) > 1:  # the next batch decodes while this one is fused
                        fuse_oldest(tar)
                while decoding:
                    fuse_oldest(tar)
                write_done(tar, keep=0)
        failures = [f"{r['key']}: {r['error']}" for r in rows if "error" in r]
        summary = {
            "input": shard,
            "pairs": len(rows),
            "fused": len(rows) - len(failures),
            "failed": len(failures),
            "refused": len(refused),
            "refusals": [str(r) for r in refused[:MAX_LISTED]],
            "failures": failures[:MAX_LISTED],
            "seconds": time.perf_counter() - started,
        }
        with _output(fs, _join(metrics_dir, f"{name}.parquet")) as (table_stream, _):
            pq.write_table(_metrics_table(rows, settings.metrics, summary), table_stream)
        fs.move(tar_tmp, tar_path)  # last: now the shard is done
    except BaseException:
        with suppress(OSError, UnboundLocalError):
            fs.delete_file(tar_tmp)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return summary
