"""Where batch fusion's results go: a folder, a shard's tar with its Parquet rows, an archive.

- ``FolderSink``: ``<stem>.png`` written atomically, then a small row file ``.rows/<stem>.json``
  (the 'done' mark a rerun skips by); a finished run folds the rows into metrics.csv.
- ``ShardSink``: ``DST/<shard>.tar`` (WebDataset: ``<key>.fused.png``) and
  ``DST/metrics/<shard>.parquet`` (one row per pair; the shard's summary in its metadata), each
  written under a temporary name and renamed when complete, the Parquet file first: a shard is
  done when ``<shard>.tar`` exists, so a killed run leaves nothing that looks complete, and a
  rerun clears the temporary files of the shards it redoes. ``DST`` is a folder or an object
  prefix (``pyarrow.fs``); on object storage a rename is a server-side copy.
- ``pack_folder`` / ``pack_shards``: a local archive of a finished run, built on the driver.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data_prep.storage import filesystem, join
from dwsfusion.evaluate import rows_csv
from dwsfusion.files import atomic_write
from dwsfusion.stream import FusedPair, result_row, write_png

from .archives import Refused, write_archive
from .manifest import MANIFEST, METRICS_CSV
from .sources import shard_name

FUSED_SUFFIX = ".fused.png"  # output member: <key>.fused.png (WebDataset field "fused.png")
METRICS_FOLDER = "metrics"  # DST/metrics/<shard>.parquet: pd.read_parquet("DST/metrics") reads them all
SUMMARY_KEY = b"dwsfusion.shard"  # the Parquet metadata entry holding the shard's summary
MAX_LISTED = 1000  # refusals and failures listed per shard (all are counted)
ROWS = ".rows"  # a folder output's row marks, until the run finishes


# ------------------------------------------------------------------ a folder
class FolderSink:
    """A folder output, written by the actors: each pair's PNG, then its row mark."""

    def __init__(self, out_dir: str | Path, node: str):
        self.out_dir, self.node = Path(out_dir), node

    def put(self, result: FusedPair) -> dict:
        """The pair's row (``name``, scores, ``seconds``, ``node``, or ``name`` and ``error``)."""
        result = write_png(result, self.out_dir)
        row = result_row(result, "name")
        if result.error is None:
            row["node"] = self.node
            atomic_write(self.out_dir / ROWS / f"{result.key}.json", json.dumps(row))
        return row


def folder_rows_done(out_dir: Path, stems: Iterable[str], finished_before: bool) -> dict[str, dict]:
    """The rows of the pairs already fused into ``out_dir``: a row mark (this or an interrupted
    run), or a row of a finished run's metrics.csv whose image is there."""
    finished = {}
    if finished_before and (out_dir / METRICS_CSV).is_file():
        with (out_dir / METRICS_CSV).open() as handle:
            finished = {r["name"]: r for r in csv.DictReader(handle) if (out_dir / f"{r['name']}.png").is_file()}
    done = {}
    for stem in stems:
        mark = out_dir / ROWS / f"{stem}.json"
        if mark.is_file():
            done[stem] = json.loads(mark.read_text())
        elif stem in finished:
            done[stem] = finished[stem]
    return done


def pack_folder(work: Path, archive: str) -> None:
    """A local archive of a finished folder output: its PNGs, metrics.csv and manifest.json."""
    rows = [r["name"] for r in csv.DictReader(io.StringIO((work / METRICS_CSV).read_text()))]
    files = [f"{name}.png" for name in rows] + [METRICS_CSV, MANIFEST]
    write_archive(((name, (work / name).read_bytes()) for name in files), archive)


# ------------------------------------------------------------------ shards
def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


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
def _output(fs: pafs.FileSystem, path: str) -> Iterator[pa.NativeFile]:
    """A stream to a temporary name beside ``path``, moved to ``path`` when written, deleted if
    anything fails: the final name appears whole or not at all."""
    tmp = _temp_path(path)
    try:
        with fs.open_output_stream(tmp) as stream:
            yield stream
        fs.move(tmp, path)
    except BaseException:
        with suppress(OSError):
            fs.delete_file(tmp)
        raise


class ShardSink:
    """One input shard's outputs in ``output`` (see the module docstring). Use as a context:
    ``put`` each result, then ``commit`` publishes both files; leaving it without a commit
    (an error, a kill) deletes what was written."""

    def __init__(self, output: str, shard: str, metrics: Sequence[str]):
        self.shard, self.metrics, self.started = shard, tuple(metrics), time.perf_counter()
        self.fs, root = filesystem(output)
        name = shard_name(shard)
        self.tar_path, self.table_path = join(root, f"{name}.tar"), join(root, METRICS_FOLDER, f"{name}.parquet")
        for path in (self.tar_path, self.table_path):
            folder, _, base = path.rpartition("/")
            self.fs.create_dir(folder, recursive=True)
            clear_temporaries(self.fs, folder, base)  # a killed run's
        self.rows: list[dict] = []
        self._tmp = _temp_path(self.tar_path)
        self._stream = self._tar = None
        self._committed = False

    def __enter__(self) -> ShardSink:
        self._stream = self.fs.open_output_stream(self._tmp)
        self._tar = tarfile.open(fileobj=self._stream, mode="w|")
        return self

    def put(self, result: FusedPair) -> None:
        if result.error is None:
            info = tarfile.TarInfo(result.key + FUSED_SUFFIX)
            info.size, info.mtime, info.mode = len(result.png), int(time.time()), 0o644
            self._tar.addfile(info, io.BytesIO(result.png))
        self.rows.append({"shard": self.shard, **result_row(result, "key")})

    def commit(self, refused: Sequence[Refused]) -> dict:
        """Both files published (the Parquet first, the tar last: now the shard is done);
        returns the shard's summary."""
        self._tar.close()
        self._stream.close()
        failures = [f"{r['key']}: {r['error']}" for r in self.rows if "error" in r]
        summary = {
            "input": self.shard,
            "pairs": len(self.rows),
            "fused": len(self.rows) - len(failures),
            "failed": len(failures),
            "refused": len(refused),
            "refusals": [str(r) for r in refused[:MAX_LISTED]],
            "failures": failures[:MAX_LISTED],
            "seconds": time.perf_counter() - self.started,
        }
        with _output(self.fs, self.table_path) as stream:
            pq.write_table(self._table(summary), stream)
        self.fs.move(self._tmp, self.tar_path)
        self._committed = True
        return summary

    def _table(self, summary: dict) -> pa.Table:
        rows = self.rows
        columns = {
            "shard": pa.array([r["shard"] for r in rows], pa.string()),
            "key": pa.array([r["key"] for r in rows], pa.string()),
            **{m: pa.array([r.get(m) for r in rows], pa.float64()) for m in self.metrics},
            "seconds": pa.array([r.get("seconds") for r in rows], pa.float64()),
            "error": pa.array([r.get("error") for r in rows], pa.string()),
        }
        return pa.table(columns).replace_schema_metadata({SUMMARY_KEY: json.dumps(summary).encode()})

    def __exit__(self, *exc_info) -> None:
        if self._committed:
            return
        with suppress(Exception):  # the tar stream may be broken already; the error that got here matters
            self._tar.close()
            self._stream.close()
        with suppress(OSError):
            self.fs.delete_file(self._tmp)


def finished_shards(output: str) -> set[str]:
    """Names of the shards whose outputs exist in ``output`` (their .tar and their Parquet)."""
    fs, root = filesystem(output)
    tars = {i.base_name[:-4] for i in _listing(fs, root) if i.is_file and i.base_name.endswith(".tar")}
    tables = {i.base_name[:-8] for i in _listing(fs, join(root, METRICS_FOLDER)) if i.base_name.endswith(".parquet")}
    return tars & tables


def read_summary(output: str, name: str) -> dict:
    """A finished shard's summary, from its Parquet metadata (the footer only is read)."""
    fs, root = filesystem(output)
    schema = pq.read_schema(join(root, METRICS_FOLDER, f"{name}.parquet"), filesystem=fs)
    return json.loads(schema.metadata[SUMMARY_KEY])


def read_metrics(output: str, names: Iterable[str]) -> pa.Table:
    """The per-pair rows of the named shards, in that order."""
    fs, root = filesystem(output)
    tables = [pq.read_table(join(root, METRICS_FOLDER, f"{n}.parquet"), filesystem=fs) for n in names]
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) if tables else pa.table({})


def iter_fused(output: str, name: str) -> Iterator[tuple[str, bytes]]:
    """(key, PNG bytes) of a finished output shard, streamed."""
    fs, root = filesystem(output)
    with fs.open_input_stream(join(root, f"{name}.tar")) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.isfile() and info.name.endswith(FUSED_SUFFIX):
                yield info.name[: -len(FUSED_SUFFIX)], tar.extractfile(info).read()


def clear_shard_temporaries(output: str) -> None:
    """What killed runs left in ``output`` and its metrics folder, once every shard is done."""
    fs, root = filesystem(output)
    for folder in (root, join(root, METRICS_FOLDER)):
        clear_temporaries(fs, folder)


def pack_shards(work: str, archive: str, manifest: dict) -> None:
    """A local archive from the finished shards of ``work``: ``<key>.png`` (``<shard>/<key>.png``
    with several shards), metrics.csv and manifest.json; assembled here, on the driver."""
    names = list(manifest["shards"])
    prefix = {shard: f"{name}/" if len(names) > 1 else "" for name, shard in manifest["shards"].items()}

    def members():
        for name in names:
            for key, png in iter_fused(work, name):
                yield f"{prefix[manifest['shards'][name]]}{key}.png", png
        rows = read_metrics(work, names).to_pylist()
        for row in rows:
            row["name"] = prefix[row["shard"]] + row["key"]
        yield METRICS_CSV, rows_csv(rows, ["name", *manifest["settings"]["metrics"], "seconds", "error"]).encode()
        yield MANIFEST, json.dumps(manifest, indent=2).encode()

    write_archive(members(), archive)
