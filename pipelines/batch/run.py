"""``batch_fuse``: sources -> a pool of ``FuserActor`` on Ray Data -> sinks, for both forms.

**Shards** (one archive, many, a glob, or an ``s3://``/``gs://`` prefix of .tar/.tar.gz/.zip):

    driver: list the shards (no byte read), skip those whose output exists
      -> Ray Data: one task per shard on the pool, each streaming its shard into
         DST/<shard>.tar + DST/metrics/<shard>.parquet (sinks.ShardSink)
      -> driver: manifest.json from the shards' summaries; DST a folder or object prefix, or
         a local archive assembled from them

**A folder** (ir/ + vi/, or MSRS test/): the driver lists the pairs, the actors read each
pair's files and write ``<stem>.png`` and its row mark (sinks.FolderSink, so a rerun skips it);
a finished run folds the rows into metrics.csv and removes them.

Either way the actors report pairs as they finish to a counter the driver's progress bar
polls, and nothing half-written ever carries a final name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, field_validator

from data_prep import ray_session
from data_prep.storage import filesystem, is_uri
from dwsfusion.errors import UsageError
from dwsfusion.evaluate import write_rows_csv
from dwsfusion.files import atomic_write
from pipelines.config import FuseSettings, fuse_output

from .archives import archive_kind, read_archive_member, remove_tree
from .fuser import FuserActor, resolve_model
from .manifest import (
    MANIFEST,
    METRICS_CSV,
    load_packed,
    manifest,
    pairs_per_node,
    read_manifest,
    refuse_other_run,
    same_run,
    shard_counts,
    write_manifest,
)
from .progress import PairCounter, ProgressBar
from .sinks import (
    ROWS,
    clear_shard_temporaries,
    finished_shards,
    folder_rows_done,
    pack_folder,
    pack_shards,
    read_summary,
)
from .sources import as_items, folder_input, input_form, list_shards, shard_names


class FuseJob(FuseSettings):
    """One batch fusion: the settings, what to fuse, where to, and with which model. The one
    settings object of a run: the CLI and the workflow build it, the actors get it as is."""

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


# ------------------------------------------------------------------ the pool
def _default_actors(job: FuseJob) -> int:
    import ray  # Ray: heavy and optional, imported on use

    resources = ray.cluster_resources()
    if job.gpus_per_actor:
        return max(1, int(resources.get("GPU", 0) // job.gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // job.cpus_per_actor))


def _execute(dataset) -> list[dict]:
    """The pool's dataset, run to its end in a Ray task on the driver's node rather than in the
    driver: Ray Core logs a needless error from whichever process creates a restartable actor
    whose arguments sit in the object store, as every Ray Data actor's do (ray-project/ray#57733).
    From a worker that line reaches the console through Ray's log streaming, which drops it
    (``ray_session.RAY_NOISE``); from the driver it would go straight to the terminal."""
    return list(dataset.iter_rows())


def _run_pool(
    job: FuseJob, model: dict, output: str, items: list[dict], total: int | None, progress: bool
) -> tuple[list[dict], float | None]:
    """``items`` (pairs, or shards) through a pool of ``FuserActor`` while a bar counts the pairs
    they report (``total`` None: not known before the shards are read). Returns the actors'
    outputs and when the first pair was seen done (``time.perf_counter``, to the second)."""
    import ray  # Ray: heavy and optional, imported on use
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray_session.ensure_ray(dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts pairs, not blocks
    actors = min(job.actors or _default_actors(job), len(items))
    # On the driver's node: the bar must outlive any worker node the run loses.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    counter = ray.remote(num_cpus=0, scheduling_strategy=here)(PairCounter).remote()
    shards = "shard" in items[0]
    # A shard is a block of its own (a free actor takes the next); pairs come in a few blocks per actor.
    blocks = len(items) if shards else min(len(items), actors * 4)
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        FuserActor,
        fn_constructor_kwargs={
            "model": model,
            "job": job,
            "output": output,
            "counter": counter,
            "verbose": ray_session.VERBOSE,
        },  # fmt: skip
        batch_size=1 if shards else job.batch_size,
        # All the actors asked for start at once (an autoscaling pool would start one and add the
        # rest only once a backlog builds); the pool may shrink to one when a node is lost.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        num_cpus=job.cpus_per_actor,
        num_gpus=job.gpus_per_actor,
    )
    # The results are read on this (the main) thread, so that a signal or Ctrl-C stops the run
    # here; on the driver's node, as the bar; not retried: a rerun resumes from what was written.
    with ProgressBar(counter, total, len(items), progress) as bar:
        execute = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy=here)(_execute)
        outputs = ray.get(execute.remote(dataset))
    ray.kill(counter)
    return outputs, bar.first_pair


# ------------------------------------------------------------------ the two forms
def _fuse_shards(job: FuseJob, model: dict, target: str, progress: bool) -> dict:
    """Every shard not yet done in ``target`` (see the module docstring); returns the manifest."""
    started = time.perf_counter()
    settings, names = job.identity(), shard_names(list_shards(job.input))
    identity = {"kind": "shards", "inputs": list(job.input)}
    refuse_other_run(read_manifest(target), target, model, settings)
    fs, root = filesystem(target)
    fs.create_dir(root, recursive=True)
    write_manifest(target, manifest(model, settings, identity, {}, status="running"))
    done_before = finished_shards(target) & names.keys()
    todo = [{"shard": shard} for name, shard in names.items() if name not in done_before]
    outputs, first_pair = _run_pool(job, model, target, todo, None, progress) if todo else ([], None)
    now = {s["input"]: s for s in (json.loads(o["summary"]) for o in outputs)}
    summaries = [now.get(shard) or read_summary(target, name) for name, shard in names.items()]
    counts, failures = shard_counts(summaries, now, len(done_before))
    clear_shard_temporaries(target)  # what killed runs left, once every shard is done
    record = manifest(
        model,
        settings,
        identity,
        counts,
        status="incomplete" if counts["shards_failed"] else "finished",
        nodes=pairs_per_node((s.get("node"), s.get("fused", 0)) for s in now.values()),  # pairs per Ray node
        failures=failures,
        seconds=time.perf_counter() - started,
        first_pair_s=first_pair and first_pair - started,  # seconds to the first fused pair (to 1 s)
        shards=names,  # output name -> input shard
    )
    write_manifest(target, record)
    return record


def _fuse_folder(job: FuseJob, model: dict, out_dir: Path, progress: bool) -> tuple[dict, int]:
    """The pairs of a local folder into ``out_dir`` (see the module docstring); returns the
    manifest and how many pairs were done before this call."""
    started = time.perf_counter()
    settings, source = job.identity(), folder_input(job.input[0])
    previous = read_manifest(str(out_dir))
    refuse_other_run(previous, out_dir, model, settings, source.identity)
    (out_dir / ROWS).mkdir(parents=True, exist_ok=True)
    stems = [p.stem for p in source.pairs]
    done = folder_rows_done(out_dir, stems, previous is not None)
    todo = [p for p in source.pairs if p.stem not in done]
    items = as_items(todo)
    outputs, first_pair = (
        _run_pool(job, model, str(out_dir.resolve()), items, len(todo), progress) if todo else ([], None)
    )
    errors = [f"{r['name']}: {r['error']}" for r in (json.loads(o["row"]) for o in outputs) if "error" in r]
    rows = list(folder_rows_done(out_dir, stems, previous is not None).values())
    counts = {
        "pairs": len(source.pairs),
        "fused": len(rows),
        "fused_this_run": len(todo) - len(errors),
        "failed": len(errors),
        "refused": len(source.unpaired),
    }
    record = manifest(
        model,
        settings,
        source.identity,
        counts,
        nodes=pairs_per_node((r.get("node"), 1) for r in rows),  # pairs fused per Ray node
        failures=[str(u) for u in source.unpaired] + errors,
        seconds=time.perf_counter() - started,
        first_pair_s=first_pair and first_pair - started,  # seconds to the first fused pair (to 1 s)
    )
    write_rows_csv(rows, ["name", *job.metrics, "seconds", "node"], out_dir / METRICS_CSV)
    atomic_write(out_dir / MANIFEST, json.dumps(record, indent=2))
    remove_tree(out_dir / ROWS)  # folded into metrics.csv: nothing hidden is left
    return record, len(done)


# ------------------------------------------------------------------ the run
def _packed_result(job: FuseJob, model: dict) -> FuseResult:
    """An archive output that exists: this run's, finished (nothing to do), or refused."""
    finished = load_packed(read_archive_member(job.output, MANIFEST))
    if same_run(finished, model, job.identity()):  # the input was checked when it was packed
        return FuseResult(job.output, 0, finished["counts"]["fused"], finished.get("failures", []), finished)
    raise FileExistsError(f"{job.output}: exists and was not made by this model and these settings")


def batch_fuse(job: FuseJob, progress: bool = True) -> FuseResult:
    """Fuse every pair of ``job.input`` into ``job.output``; see the module docstring."""
    model = resolve_model(job)
    form = input_form(job.input)
    to_archive = archive_kind(job.output) is not None
    if form == "folder" and is_uri(job.output):
        raise UsageError(
            f"{job.output}: a folder of pairs is fused into a folder or a local archive; to write to object "
            "storage, give archive shards as the input (tar the folder, or put it in s3:// as shards)"
        )
    if to_archive and Path(job.output).exists():
        return _packed_result(job, model)
    work = f"{job.output}.work" if to_archive else job.output  # an archive is built from a visible work folder
    if form == "folder":
        Path(work).mkdir(parents=True, exist_ok=True)
        record, skipped = _fuse_folder(job, model, Path(work), progress)
        if to_archive:
            pack_folder(Path(work), job.output)
    else:
        record = _fuse_shards(job, model, work, progress)
        skipped = record["counts"]["fused"] - record["counts"]["fused_this_run"]
        if to_archive and record["status"] == "finished":  # else the work folder stays for the rerun
            pack_shards(work, job.output, record)
    if to_archive and Path(job.output).exists():
        remove_tree(Path(work))
    return FuseResult(job.output, record["counts"]["fused_this_run"], skipped, record["failures"], record)
