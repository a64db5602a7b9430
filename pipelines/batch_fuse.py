"""Batch fusion of folders and archive shards on Ray Data actors, with a registered model or
a checkpoint. Two input forms, one verb:

**Shards** (one archive, many, a glob, or an ``s3://``/``gs://`` prefix of .tar/.tar.gz/.zip):

    driver: list the shards (no byte read), skip those whose output exists
      -> Ray Data: one task per shard on a pool of model actors, each streaming its shard
         (``pipelines.shards.fuse_shard``) into DST/<shard>.tar + DST/metrics/<shard>.parquet
      -> driver: manifest.json from the shards' summaries; DST a folder or object prefix, or
         a local archive assembled from them

**A folder** (ir/ + vi/, or MSRS test/): the driver lists the pairs, the actors read each
pair's files and write ``<stem>.png`` atomically, then a small row file ``.rows/<stem>.json``
(the 'done' mark, so a re-run skips it); a finished run folds the rows into metrics.csv and
removes them.

Either way the actors report pairs as they finish to a counter the driver's progress bar
polls, and nothing half-written ever carries a final name.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from dwsfusion.errors import UsageError
from dwsfusion.evaluate import fuse_and_score, rows_csv, write_rows_csv
from dwsfusion.files import atomic_write
from dwsfusion.fuse import load_fuser, resolve_engine
from dwsfusion.pairs import ImagePair, PairError, find_pairs, resolve_source

from .archives import archive_kind, read_archive_member, remove_tree, write_archive
from .config import FuseSettings, fuse_output
from .runtime import is_uri

MANIFEST = "manifest.json"
METRICS_CSV = "metrics.csv"
ROWS = ".rows"


class FuseJob(FuseSettings):
    """One batch fusion: the settings, what to fuse, where to, and with which model."""

    input: tuple[str, ...] = Field(min_length=1)  # a folder (ir/ + vi/), or archives / globs / prefixes of shards
    output: str  # folder, object-store prefix, or a local .tar / .tar.gz / .tgz / .zip
    model: str | None = None  # models:/name@alias, models:/name/3, runs:/...
    checkpoint: str | None = None  # or a checkpoint file (ours or the release's)
    tracking_uri: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return (value,) if isinstance(value, str) else value

    @field_validator("output")
    @classmethod
    def _an_output(cls, value: str) -> str:
        return fuse_output(value)


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
    resolve_engine(job.checkpoint, job.engine, job.precision)  # a pairing that cannot run: refused now, not per actor
    if job.checkpoint:
        from dwsfusion.checkpoints import checkpoint_file

        path = checkpoint_file(Path(job.checkpoint).resolve())  # a training checkpoint's folder -> its state.pt
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"kind": "checkpoint", "uri": str(path), "sha256": digest, "engine": job.engine}
    import mlflow
    from mlflow import MlflowClient

    if job.tracking_uri:
        from .runtime import use_tracking

        use_tracking(job.tracking_uri)
    info = {"kind": "mlflow", "uri": job.model, "tracking_uri": mlflow.get_tracking_uri(), "engine": job.engine}
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


def load_model(model: dict, device: str = "cpu", threads: int | None = None):
    """What an actor (or the bare loop) fuses with: a generator on ``device``, or an exported
    model on ONNX Runtime (``dwsfusion.fuse.Fuser``)."""
    engine = model.get("engine", "auto")
    if model["kind"] == "checkpoint":
        return load_fuser(model["uri"], engine, device, threads)
    import mlflow  # heavy, and only a registered model needs it

    mlflow.set_tracking_uri(model["tracking_uri"])
    from .registry import load_registered_generator, registered_onnx

    if engine == "onnxruntime":
        return load_fuser(registered_onnx(model["uri"]), engine, "cpu", threads)
    return load_registered_generator(model["uri"]).to(device)


class PairCounter:
    """Pairs done, per unit of work (a shard, or an actor call): a redone unit replaces its
    count instead of adding to it. A Ray actor the driver's progress bar polls."""

    def __init__(self):
        self.done: dict[str, int] = {}
        self.finished: set[str] = set()

    def report(self, unit: str, done: int, finished: bool = False) -> None:
        self.done[unit] = done
        if finished:
            self.finished.add(unit)

    def total(self) -> tuple[int, int]:
        """(pairs done, units finished)."""
        return sum(self.done.values()), len(self.finished)


def _at_most_every(seconds: float, call):
    """``call`` that does nothing when the last call that did was under ``seconds`` ago."""
    last = -seconds

    def throttled(*args) -> None:
        nonlocal last
        if time.monotonic() - last >= seconds:
            last = time.monotonic()
            call(*args)

    return throttled


class _ModelActor:
    """One model replica on its CPUs or GPU (the base of both forms' actors)."""

    def __init__(self, model: dict, threads: int, counter, verbose: bool = False):
        import torch

        from .runtime import quiet_libraries

        quiet_libraries(verbose)
        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.generator = load_model(model, self.device, threads)
        self.counter = counter

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]  # which node fused it: the manifest counts them


class FuseActor(_ModelActor):
    """The folder form: fuse, write the PNG, score, then write the row (the 'done' mark). A
    call gets up to ``batch_size`` pairs; those of one size (and not tiled) share a forward."""

    def __init__(self, model: dict, out_dir: str, job: dict, counter, verbose: bool = False):
        super().__init__(model, int(max(1, job["cpus_per_actor"])), counter, verbose)
        self.out_dir, self.job = Path(out_dir), job

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from dwsfusion.tiling import TileConfig

        pairs = [
            ImagePair(str(stem), Path(str(ir)), Path(str(vi)))
            for stem, ir, vi in zip(batch["stem"], batch["ir"], batch["vi"], strict=True)
        ]
        job = self.job
        settings = (tuple(job["metrics"]), job["rounding"], TileConfig(**job["tiles"]), job["precision"])
        rows = fuse_and_score(self.generator, pairs, self.out_dir, *settings, job["limits"]["max_pixels"])
        node = self.node()
        for row in rows:
            if "error" not in row:
                row["node"] = node
                atomic_write(self.out_dir / ROWS / f"{row['name']}.json", json.dumps(row))
        self.counter.report.remote(pairs[0].stem, len(rows))  # one call, one unit
        return {"row": [json.dumps(r) for r in rows]}


class ShardActor(_ModelActor):
    """The shard form: one call, one whole shard (``pipelines.shards.fuse_shard``). A shard
    that cannot be read is reported in its summary; the other shards go on."""

    def __init__(self, model: dict, output: str, settings, counter, verbose: bool = False):
        super().__init__(model, settings.threads, counter, verbose)
        self.output, self.settings = output, settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from .shards import fuse_shard

        summaries = []
        for shard in map(str, batch["shard"]):
            # The bar polls every second: a report every half second, not one call per pair.
            report = _at_most_every(0.5, lambda done, shard=shard: self.counter.report.remote(shard, done))
            try:
                summary = fuse_shard(self.generator, shard, self.output, self.settings, report)
            except Exception as exc:  # noqa: BLE001 - named in the manifest; the run goes on
                summary = {"input": shard, "error": f"{type(exc).__name__}: {exc}"}
            self.counter.report.remote(shard, summary.get("pairs", 0), finished=True)
            summaries.append(json.dumps({**summary, "node": self.node()}))
        return {"summary": summaries}


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


def _execute(dataset) -> list[dict]:
    """The pool's dataset, run to its end in a Ray task on the driver's node rather than in the
    driver: Ray Core logs a needless error from whichever process creates a restartable actor
    whose arguments sit in the object store, as every Ray Data actor's do (ray-project/ray#57733).
    From a worker that line reaches the console through Ray's log streaming, which drops it
    (``runtime.RAY_NOISE``); from the driver it would go straight to the terminal."""
    return list(dataset.iter_rows())


def _run_pool(
    job: FuseJob, items: list[dict], actor: type, kwargs: dict, total: int | None, progress: bool
) -> tuple[list[dict], float | None]:
    """``items`` through a pool of ``actor``, while a progress bar counts the pairs the actors
    report (``total`` None: not known before the shards are read; the bar then shows the shards
    finished). Returns the actors' outputs and when the first pair was seen done
    (``time.perf_counter``, to the second)."""
    import ray
    from tqdm import tqdm

    from . import runtime

    runtime.ensure_ray(dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts pairs, not blocks
    actors = min(job.actors or _default_actors(job), len(items))
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: the bar must outlive any worker node the run loses.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    counter = ray.remote(num_cpus=0, scheduling_strategy=here)(PairCounter).remote()
    # A shard is a block of its own (a free actor takes the next); pairs come in a few blocks per actor.
    blocks = len(items) if actor is ShardActor else min(len(items), actors * 4)
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        actor,
        fn_constructor_kwargs={**kwargs, "counter": counter, "verbose": runtime.VERBOSE},
        batch_size=job.batch_size if actor is FuseActor else 1,
        # All the actors asked for start at once (an autoscaling pool would start one and add the
        # rest only once a backlog builds); the pool may shrink to one when a node is lost.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        num_cpus=job.cpus_per_actor,
        num_gpus=job.gpus_per_actor,
    )
    first_pair: list[float] = []
    stop = threading.Event()

    def poll(bar) -> None:
        """The bar, from the counter, once a second; best effort, never the run's failure."""
        try:
            pairs, units = ray.get(counter.total.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return
        if pairs and not first_pair:
            first_pair.append(time.perf_counter())
        bar.update((pairs if total is None else min(total, pairs)) - bar.n)
        if total is None:
            bar.set_postfix_str(f"{units}/{len(items)} shards", refresh=False)

    def watch(bar) -> None:
        while not stop.wait(1.0):
            poll(bar)

    with tqdm(total=total, desc="fuse", unit="pair", disable=not progress) as bar:
        # The results are read on this (the main) thread, so that a signal or Ctrl-C stops the run
        # here; the poller is stopped before Ray shuts down, so nothing calls into Ray after it.
        watcher = threading.Thread(target=watch, args=(bar,), name="fuse-progress", daemon=True)
        watcher.start()
        try:
            # On the driver's node, as the bar; not retried: a rerun resumes from the rows written.
            execute = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy=here)(_execute)
            outputs = ray.get(execute.remote(dataset))
        finally:
            stop.set()
            watcher.join()
        poll(bar)
        if total is not None:  # the actors' last reports may trail their results
            bar.update(total - bar.n)
    ray.kill(counter)
    return outputs, (first_pair or [None])[0]


def _manifest(model: dict, settings: dict, identity: dict, counts: dict, **more) -> dict:
    return {
        "format": "dwsfusion-batch-fuse",
        "model": model,
        "input": identity,
        "settings": settings,
        "counts": counts,
        **more,
    }


def _refuse_other_run(previous: dict | None, where: str, model: dict, settings: dict) -> None:
    if previous and not _same_run(previous, model, settings):
        raise FileExistsError(f"{where}: holds fusions of another model or settings (see its {MANIFEST})")


# ------------------------------------------------------------------ shards
def _read_json(output: str, name: str) -> dict | None:
    from data_prep.manifest import filesystem, read_json

    fs, root = filesystem(output)
    return read_json(fs, f"{root.rstrip('/')}/{name}")


def _write_json(output: str, name: str, payload: dict) -> None:
    from data_prep.manifest import filesystem, write_json

    fs, root = filesystem(output)
    write_json(fs, f"{root.rstrip('/')}/{name}", payload)


def _fuse_shards(job: FuseJob, model: dict, settings: dict, target: str, progress: bool) -> dict:
    """Every shard not yet done in ``target`` (see the module docstring); returns the manifest."""
    from data_prep.manifest import filesystem

    from .shards import (
        METRICS_FOLDER,
        ShardSettings,
        clear_temporaries,
        finished_shards,
        list_shards,
        read_summary,
        shard_names,
    )

    started = time.perf_counter()
    names = shard_names(list_shards(job.input))
    identity = {"kind": "shards", "inputs": list(job.input)}
    _refuse_other_run(_read_json(target, MANIFEST), target, model, settings)
    fs, root = filesystem(target)
    fs.create_dir(root, recursive=True)
    _write_json(target, MANIFEST, _manifest(model, settings, identity, {}, status="running"))
    done_before = finished_shards(target) & names.keys()
    todo = [shard for name, shard in names.items() if name not in done_before]
    shard_settings = ShardSettings(
        metrics=tuple(job.metrics),
        rounding=job.rounding,
        tiles=job.tiles,
        precision=job.precision,
        limits=job.limits,
        batch_size=job.batch_size,
        threads=int(max(1, job.cpus_per_actor)),
    )
    kwargs = {"model": model, "output": target, "settings": shard_settings}
    items = [{"shard": s} for s in todo]
    outputs, first_pair = _run_pool(job, items, ShardActor, kwargs, None, progress) if todo else ([], None)
    now = {json.loads(o["summary"])["input"]: json.loads(o["summary"]) for o in outputs}
    summaries = [now.get(shard) or read_summary(target, name) for name, shard in names.items()]
    broken = [s for s in summaries if "error" in s]
    failures = [f"{s['input']}: {s['error']}" for s in broken]
    failures += [f"{s['input']}: {f}" for s in summaries for f in s.get("refusals", []) + s.get("failures", [])]
    whole = [s for s in summaries if "error" not in s]
    counts = {
        "shards": len(names),
        "shards_done_before": len(done_before),
        "shards_failed": len(broken),
        "pairs": sum(s["pairs"] for s in whole),
        "fused": sum(s["fused"] for s in whole),
        "fused_this_run": sum(s["fused"] for s in now.values() if "error" not in s),
        "failed": sum(s["failed"] for s in whole) + len(broken),
        "refused": sum(s["refused"] for s in whole),
    }
    nodes = collections.Counter()
    for s in now.values():
        nodes[s.get("node", "?")] += s.get("fused", 0)
    for folder in (root, f"{root.rstrip('/')}/{METRICS_FOLDER}"):
        clear_temporaries(fs, folder)  # what killed runs left, once every shard is done
    manifest = _manifest(
        model,
        settings,
        identity,
        counts,
        status="finished" if not broken else "incomplete",
        nodes=dict(nodes),  # pairs fused per Ray node in this run
        failures=failures,
        seconds=time.perf_counter() - started,
        first_pair_s=first_pair and first_pair - started,  # seconds to the first fused pair (to 1 s)
        shards=names,  # output name -> input shard
    )
    _write_json(target, MANIFEST, manifest)
    return manifest


def _pack_shards(work: str, archive: str, manifest: dict) -> None:
    """A local archive from the finished shards of ``work``: ``<key>.png`` (``<shard>/<key>.png``
    with several shards), metrics.csv and manifest.json; assembled here, on the driver."""
    from .shards import iter_fused, read_metrics

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


# ------------------------------------------------------------------ a folder
def _fuse_folder(job: FuseJob, model: dict, settings: dict, out_dir: Path, progress: bool) -> tuple[dict, int]:
    """The pairs of a local folder into ``out_dir`` (see the module docstring); returns the
    manifest and how many pairs were done before this call."""
    started = time.perf_counter()
    ir_dir, vi_dir = resolve_source(job.input[0])
    pairs, unpaired = find_pairs(ir_dir, vi_dir, strict=False)
    if not pairs:
        raise PairError(f"{job.input[0]}: no IR/VIS pairs found" + "".join(f"; {u}" for u in unpaired[:5]))
    identity = {"kind": "folder", "path": str(Path(job.input[0]).resolve())}
    previous = json.loads((out_dir / MANIFEST).read_text()) if (out_dir / MANIFEST).is_file() else None
    if previous and not _same_run(previous, model, settings, identity):
        raise FileExistsError(f"{out_dir}: holds fusions of another input, model or settings (see its {MANIFEST})")
    (out_dir / ROWS).mkdir(parents=True, exist_ok=True)
    # Done: a row mark (this or an interrupted run), or a row of a finished run's metrics.csv.
    finished = {}
    if previous and (out_dir / METRICS_CSV).is_file():
        with (out_dir / METRICS_CSV).open() as handle:
            finished = {r["name"]: r for r in csv.DictReader(handle) if (out_dir / f"{r['name']}.png").is_file()}
    rows_of = {p.stem: out_dir / ROWS / f"{p.stem}.json" for p in pairs}
    done = {p.stem for p in pairs if p.stem in finished or rows_of[p.stem].is_file()}
    todo = [p for p in pairs if p.stem not in done]
    items = [{"stem": p.stem, "ir": str(p.ir.resolve()), "vi": str(p.vi.resolve())} for p in todo]
    kwargs = {"model": model, "out_dir": str(out_dir.resolve()), "job": job.model_dump(mode="json")}
    outputs, first_pair = _run_pool(job, items, FuseActor, kwargs, len(todo), progress) if todo else ([], None)
    new_rows = [json.loads(o["row"]) for o in outputs]
    errors = [f"{r['name']}: {r['error']}" for r in new_rows if "error" in r]
    rows = [
        json.loads(rows_of[p.stem].read_text()) if rows_of[p.stem].is_file() else finished[p.stem]
        for p in pairs
        if rows_of[p.stem].is_file() or p.stem in finished
    ]
    manifest = _manifest(
        model,
        settings,
        identity,
        {
            "pairs": len(pairs),
            "fused": len(rows),
            "fused_this_run": len(todo) - len(errors),
            "failed": len(errors),
            "refused": len(unpaired),
        },
        nodes=dict(collections.Counter(r.get("node", "?") for r in rows)),  # pairs fused per Ray node
        failures=[str(u) for u in unpaired] + errors,
        seconds=time.perf_counter() - started,
        first_pair_s=first_pair and first_pair - started,  # seconds to the first fused pair (to 1 s)
    )
    write_rows_csv(rows, ["name", *job.metrics, "seconds", "node"], out_dir / METRICS_CSV)
    atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    remove_tree(out_dir / ROWS)  # folded into metrics.csv: nothing hidden is left
    return manifest, len(done)


def input_form(job: FuseJob) -> str:
    """'folder' for one local folder of pairs (ir/ + vi/ or MSRS), else 'shards'."""
    only = job.input[0] if len(job.input) == 1 else None
    if only is None or is_uri(only) or not Path(only).is_dir():
        return "shards"
    try:
        resolve_source(only)
    except PairError:
        return "shards"  # a folder of archives
    return "folder"


def batch_fuse(job: FuseJob, progress: bool = True) -> FuseResult:
    """Fuse every pair of ``job.input`` into ``job.output``; see the module docstring."""
    model = resolve_model(job)
    settings = _settings(job)
    form = input_form(job)
    to_archive = archive_kind(job.output) is not None
    if form == "folder" and is_uri(job.output):
        raise UsageError(
            f"{job.output}: a folder of pairs is fused into a folder or a local archive; to write to object "
            "storage, give archive shards as the input (tar the folder, or put it in s3:// as shards)"
        )
    if to_archive and Path(job.output).exists():
        packed = read_archive_member(job.output, MANIFEST)
        finished = json.loads(packed) if packed else None
        if _same_run(finished, model, settings):  # the input was checked when it was packed
            return FuseResult(job.output, 0, finished["counts"]["fused"], finished.get("failures", []), finished)
        raise FileExistsError(f"{job.output}: exists and was not made by this model and these settings")
    work = f"{job.output}.work" if to_archive else job.output  # an archive is built from a visible work folder
    if form == "folder":
        Path(work).mkdir(parents=True, exist_ok=True)
        manifest, skipped = _fuse_folder(job, model, settings, Path(work), progress)
        if to_archive:
            rows = [r["name"] for r in csv.DictReader(io.StringIO((Path(work) / METRICS_CSV).read_text()))]
            files = [f"{name}.png" for name in rows] + [METRICS_CSV, MANIFEST]
            write_archive(((name, (Path(work) / name).read_bytes()) for name in files), job.output)
    else:
        manifest = _fuse_shards(job, model, settings, work, progress)
        skipped = manifest["counts"]["fused"] - manifest["counts"]["fused_this_run"]
        if to_archive and manifest["status"] == "finished":  # else the work folder stays for the rerun
            _pack_shards(work, job.output, manifest)
    if to_archive and Path(job.output).exists():
        remove_tree(Path(work))
    return FuseResult(job.output, manifest["counts"]["fused_this_run"], skipped, manifest["failures"], manifest)
