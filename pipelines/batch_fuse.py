"""Batch fusion of folders and archives on Ray Data, with a registered model or a checkpoint.

    SRC (folder | .tar | .tar.gz | .zip, local or pyarrow URI)
      -> safe extraction of the ir/ + vi/ members (archives only)          [driver]
      -> pairs by stem, minus those already fused                          [driver]
      -> Ray Data: a pool of model actors fuse, write, score each pair     [actors]
      -> metrics.csv + manifest.json, then DST folder or archive           [driver]

Each actor writes ``<stem>.png`` atomically and then a small row file ``.rows/<stem>.json``
(its metrics); a pair is done when its row exists, so a re-run skips it and a killed run
leaves only complete images. An output archive is packed from a work folder beside it under
a temporary name and renamed when complete; its manifest is read back to make a re-run of a
finished archive a no-op. On a multi-node cluster SRC and DST must be on storage every node
sees (NFS), or SRC an ``s3://``/``gs://`` archive (the driver copies it into the work folder).
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import field_validator

from dwsfusion.errors import UsageError
from dwsfusion.evaluate import write_rows_csv
from dwsfusion.files import atomic_path, atomic_write
from dwsfusion.pairs import ImagePair, PairError, find_pairs, resolve_source
from dwsfusion.tiling import TileConfig

from .archives import Refused, archive_kind, extract_pairs, read_archive_member, write_archive
from .config import FuseSettings, filesystem_output

MANIFEST = "manifest.json"
METRICS_CSV = "metrics.csv"
ROWS = ".rows"


class FuseJob(FuseSettings):
    """One batch fusion: the settings, what to fuse, where to, and with which model."""

    input: str  # folder (ir/ + vi/ or MSRS test/), or archive path / URI
    output: str  # folder, or .tar / .tar.gz / .tgz / .zip, on a filesystem every actor reaches
    model: str | None = None  # models:/name@alias, models:/name/3, runs:/...
    checkpoint: str | None = None  # or a checkpoint file (ours or the release's)
    tracking_uri: str | None = None

    @field_validator("output")
    @classmethod
    def _a_filesystem_path(cls, value: str) -> str:
        return filesystem_output(value)


@dataclass
class FuseResult:
    output: str
    fused: int  # pairs fused in this call
    skipped: int  # pairs already done before this call
    failures: list[str] = field(default_factory=list)  # "<file or member>: <reason>"
    manifest: dict = field(default_factory=dict)


# ------------------------------------------------------------------ the model
def resolve_model(job: FuseJob) -> dict:
    """Pin the model: an alias is resolved to its version now, so every actor (and a resumed
    run) uses the same weights even if the alias moves meanwhile."""
    if (job.model is None) == (job.checkpoint is None):
        raise UsageError("give exactly one of --model URI or --checkpoint PATH")
    if job.checkpoint:
        from dwsfusion.checkpoints import checkpoint_file

        path = checkpoint_file(Path(job.checkpoint).resolve())  # a training checkpoint's folder -> its state.pt
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"kind": "checkpoint", "uri": str(path), "sha256": digest}
    import mlflow
    from mlflow import MlflowClient

    if job.tracking_uri:
        from .runtime import use_tracking

        use_tracking(job.tracking_uri)
    info = {"kind": "mlflow", "uri": job.model, "tracking_uri": mlflow.get_tracking_uri()}
    if job.model.startswith("models:/") and "@" in job.model:
        name, alias = job.model.removeprefix("models:/").split("@", 1)
        from mlflow.exceptions import MlflowException

        try:
            version = MlflowClient().get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            raise UsageError(f"{job.model}: no such registered model or alias ({exc.message})") from None
        info.update(name=name, alias=alias, version=version.version, uri=f"models:/{name}/{version.version}")
        info["run_id"] = version.run_id
    return info


def load_model(model: dict):
    """The generator an actor (or the bare loop) fuses with."""
    if model["kind"] == "checkpoint":
        from dwsfusion.checkpoints import load_generator

        return load_generator(model["uri"])
    import mlflow

    mlflow.set_tracking_uri(model["tracking_uri"])
    from .registry import load_registered_generator

    return load_registered_generator(model["uri"])


class FuseActor:
    """One model replica: fuse, write the PNG, score, then write the row (the 'done' mark).
    A call gets up to ``batch_size`` pairs; those of one size (and not tiled) share a forward."""

    def __init__(
        self,
        model: dict,
        out_dir: str,
        metrics: tuple[str, ...],
        rounding: str,
        tiles: dict,
        max_pixels: int,
        threads: int,
        precision: str = "fp32",
        verbose: bool = False,
    ):
        import torch

        from .runtime import quiet_libraries

        quiet_libraries(verbose)
        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.generator = load_model(model).to(self.device)
        self.out_dir, self.metrics, self.rounding = Path(out_dir), tuple(metrics), rounding
        self.tiles, self.max_pixels, self.precision = TileConfig(**tiles), max_pixels, precision

    def fuse_many(self, pairs: list[ImagePair]) -> list[dict]:
        """Fuse, write and score (``dwsfusion.fuse.fuse_and_score``), then write each done
        pair's row: only then is the pair done."""
        import ray

        from dwsfusion.fuse import fuse_and_score

        settings = (self.metrics, self.rounding, self.tiles, self.precision, self.max_pixels)
        rows = fuse_and_score(self.generator, pairs, self.out_dir, *settings)
        node = ray.get_runtime_context().get_node_id()[:12]  # which node fused it: the manifest counts them
        for row in rows:
            if "error" not in row:
                row["node"] = node
                atomic_write(self.out_dir / ROWS / f"{row['name']}.json", json.dumps(row))
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        pairs = [
            ImagePair(str(stem), Path(str(ir)), Path(str(vi)))
            for stem, ir, vi in zip(batch["stem"], batch["ir"], batch["vi"], strict=True)
        ]
        return {"row": [json.dumps(r) for r in self.fuse_many(pairs)]}


# ------------------------------------------------------------------ inputs
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _local_archive(source: str, work: Path) -> Path:
    """A local path for the archive: as is, or copied from a pyarrow URI into ``work``."""
    if "://" not in source or source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: input archive not found")
        return path
    import pyarrow.fs as pafs

    filesystem, remote = pafs.FileSystem.from_uri(source)
    target = work / ".input" / Path(remote).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        with atomic_path(target) as tmp, filesystem.open_input_stream(remote) as src, tmp.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    return target


def gather_pairs(job: FuseJob, work: Path) -> tuple[list[ImagePair], list[Refused], dict]:
    """The input's pairs, what was refused (members, unpaired files), and its identity."""
    if archive_kind(job.input) is None:
        ir_dir, vi_dir = resolve_source(job.input)
        identity = {"kind": "folder", "path": str(Path(job.input).resolve())}
        refused: list[Refused] = []
    else:
        archive = _local_archive(job.input, work)
        digest = _sha256(archive)
        identity = {"kind": "archive", "path": job.input, "sha256": digest}
        extracted = work / ".input" / digest[:16]
        record = extracted / "refused.json"
        if record.is_file():  # extracted by an earlier (interrupted) run of the same archive
            refused = [Refused(**r) for r in json.loads(record.read_text())]
        else:
            refused = extract_pairs(archive, extracted, job.limits)
            atomic_write(record, json.dumps([asdict(r) for r in refused]))
        ir_dir, vi_dir = extracted / "ir", extracted / "vi"
    pairs, unpaired = find_pairs(ir_dir, vi_dir, strict=False)
    refused += [Refused(str(u.path), u.reason) for u in unpaired]
    if not pairs:
        raise PairError(f"{job.input}: no IR/VIS pairs found" + "".join(f"; {r}" for r in refused[:5]))
    return pairs, refused, identity


# ------------------------------------------------------------------ the run
def _settings(job: FuseJob) -> dict:
    """What decides the images and rows (a re-run with other settings is refused)."""
    return {
        "metrics": list(job.metrics),
        "rounding": job.rounding,
        "tiles": asdict(job.tiles),
        "precision": job.precision,
    }


def _same_run(manifest: dict | None, model: dict, settings: dict, identity: dict | None = None) -> bool:
    if not manifest:
        return False
    same = manifest.get("model", {}).get("uri") == model["uri"] and manifest.get("settings") == settings
    return same and (identity is None or manifest.get("input") == identity)


def _default_actors(job: FuseJob) -> int:
    import ray

    resources = ray.cluster_resources()
    if job.gpus_per_actor:
        return max(1, int(resources.get("GPU", 0) // job.gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // job.cpus_per_actor))


def _run_actors(job: FuseJob, model: dict, todo: list[ImagePair], out_dir: Path, progress: bool) -> list[dict]:
    import ray
    from tqdm import tqdm

    from . import runtime

    runtime.ensure_ray(dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts pairs, not blocks
    actors = job.actors or _default_actors(job)
    actors = min(actors, len(todo))
    items = [{"stem": p.stem, "ir": str(p.ir.resolve()), "vi": str(p.vi.resolve())} for p in todo]
    dataset = ray.data.from_items(items, override_num_blocks=min(len(items), actors * 4)).map_batches(
        FuseActor,
        fn_constructor_kwargs={
            "model": model,
            "out_dir": str(out_dir.resolve()),
            "metrics": job.metrics,
            "rounding": job.rounding,
            "tiles": asdict(job.tiles),
            "max_pixels": job.limits.max_pixels,
            "threads": int(max(1, job.cpus_per_actor)),
            "precision": job.precision,
            "verbose": runtime.VERBOSE,
        },
        batch_size=job.batch_size,
        # All the actors asked for start at once (an autoscaling pool would start one and add the
        # rest only once a backlog builds); the pool may shrink to one when a node is lost.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        num_cpus=job.cpus_per_actor,
        num_gpus=job.gpus_per_actor,
    )
    rows = []
    with tqdm(total=len(todo), desc="fuse", unit="pair", disable=not progress) as bar:
        for record in dataset.iter_rows():
            rows.append(json.loads(record["row"]))
            bar.update()
    return rows


def batch_fuse(job: FuseJob, progress: bool = True) -> FuseResult:
    """Fuse every pair of ``job.input`` into ``job.output``; see the module docstring."""
    model = resolve_model(job)
    settings = _settings(job)
    to_archive = archive_kind(job.output) is not None
    out_dir = Path(f"{job.output}.work") if to_archive else Path(job.output)
    if to_archive and Path(job.output).exists():
        packed = read_archive_member(job.output, MANIFEST)
        finished = json.loads(packed) if packed else None
        if _same_run(finished, model, settings):  # the input was checked when it was packed
            return FuseResult(job.output, 0, finished["counts"]["fused"], finished.get("failures", []), finished)
        raise FileExistsError(f"{job.output}: exists and was not made by this model and these settings")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ROWS).mkdir(exist_ok=True)

    started = time.perf_counter()
    pairs, refused, identity = gather_pairs(job, out_dir)
    previous = out_dir / MANIFEST
    if previous.is_file() and not _same_run(json.loads(previous.read_text()), model, settings, identity):
        raise FileExistsError(f"{out_dir}: holds fusions of another input, model or settings (see its {MANIFEST})")
    done = {p.stem for p in pairs if (out_dir / ROWS / f"{p.stem}.json").is_file()}
    todo = [p for p in pairs if p.stem not in done]
    new_rows = _run_actors(job, model, todo, out_dir, progress) if todo else []
    errors = [f"{r['name']}: {r['error']}" for r in new_rows if "error" in r]
    rows = [
        json.loads((out_dir / ROWS / f"{p.stem}.json").read_text())
        for p in pairs
        if (out_dir / ROWS / f"{p.stem}.json").is_file()
    ]
    failures = [str(r) for r in refused] + errors
    manifest = {
        "format": "dwsfusion-batch-fuse",
        "model": model,
        "input": identity,
        "settings": settings,
        "counts": {
            "pairs": len(pairs),
            "fused": len(rows),
            "fused_this_run": len(todo) - len(errors),
            "failed": len(errors),
            "refused": len(refused),
        },
        "nodes": dict(collections.Counter(r.get("node", "?") for r in rows)),  # pairs fused per Ray node
        "failures": failures,
        "seconds": time.perf_counter() - started,
    }
    write_rows_csv(rows, ["name", *job.metrics, "seconds"], out_dir / METRICS_CSV)
    atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    if to_archive:  # failures are listed in the packed manifest
        files = sorted(out_dir / f"{r['name']}.png" for r in rows) + [out_dir / METRICS_CSV, out_dir / MANIFEST]
        write_archive(files, out_dir, job.output)
        from .archives import remove_tree

        remove_tree(out_dir)
    return FuseResult(job.output, len(todo) - len(errors), len(done), failures, manifest)
