"""The model of a batch fusion, pinned on the driver, and the one actor that fuses with it.

``FuserActor`` holds one model replica on its CPUs or GPU and runs the library's per-pair path
(``dwsfusion.stream.fuse_stream``: decode, fuse, compose colour, score, encode) from a source
to a sink: a call of the folder form is a batch of files into the output folder; a call of the
shard form is one whole shard, streamed from storage into its tar and Parquet files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from data_prep.ray_session import quiet_libraries
from dwsfusion.checkpoints import checkpoint_file
from dwsfusion.errors import UsageError
from dwsfusion.fuse import load_fuser, resolve_engine
from dwsfusion.stream import fuse_stream
from pipelines.runtime import use_tracking

from .archives import Refused
from .progress import at_most_every
from .sinks import FolderSink, ShardSink
from .sources import items_as_pairs, shard_pairs


def resolve_model(job) -> dict:
    """Pin the model of ``job`` (a ``run.FuseJob``): an alias is resolved to its version now,
    so every actor (and a resumed run) uses the same weights even if the alias moves meanwhile."""
    if (job.model is None) == (job.checkpoint is None):
        raise UsageError("give exactly one of --model URI or --checkpoint PATH")
    resolve_engine(job.checkpoint, job.engine, job.precision)  # a pairing that cannot run: refused now, not per actor
    if job.checkpoint:
        path = checkpoint_file(Path(job.checkpoint).resolve())  # a training checkpoint's folder -> its state.pt
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"kind": "checkpoint", "uri": str(path), "sha256": digest, "engine": job.engine}
    import mlflow  # heavy and optional: only a registered model needs MLflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if job.tracking_uri:
        use_tracking(job.tracking_uri)
    info = {"kind": "mlflow", "uri": job.model, "tracking_uri": mlflow.get_tracking_uri(), "engine": job.engine}
    if job.model.startswith("models:/") and "@" in job.model:
        name, alias = job.model.removeprefix("models:/").split("@", 1)
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
    import mlflow  # heavy and optional: only a registered model needs MLflow

    from pipelines.registry import load_registered_generator, registered_onnx  # imports MLflow: see above

    mlflow.set_tracking_uri(model["tracking_uri"])
    if engine == "onnxruntime":
        return load_fuser(registered_onnx(model["uri"]), engine, "cpu", threads)
    return load_registered_generator(model["uri"]).to(device)


class FuserActor:
    """One model replica on its CPUs or GPU, for either form (``output``: the folder or the
    object prefix; ``job``: the run's ``FuseJob``, as is). Each call reports the pairs it has
    done to ``counter``, which the driver's bar polls."""

    def __init__(self, model: dict, job, output: str, counter, verbose: bool = False):
        import ray  # heavy and optional: this class runs as a Ray Data actor only

        quiet_libraries(verbose)
        threads = int(max(1, job.cpus_per_actor))
        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.fuser = load_model(model, self.device, threads)
        self.job, self.output, self.counter = job, output, counter
        self.options = job.stream_options()
        self.node = ray.get_runtime_context().get_node_id()[:12]  # which node fused it: the manifest counts them

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        if "shard" in batch:
            return {"summary": [json.dumps(self.fuse_shard(str(shard))) for shard in batch["shard"]]}
        return {"row": [json.dumps(row) for row in self.fuse_files(batch)]}

    def fuse_files(self, batch: dict[str, np.ndarray]) -> list[dict]:
        """The folder form: up to ``batch_size`` pairs of files into the output folder."""
        sink = FolderSink(self.output, self.node)
        pairs = items_as_pairs(batch)
        rows = [sink.put(result) for result in fuse_stream(self.fuser, pairs, self.options)]
        self.counter.report.remote(pairs[0].key, len(rows))  # one call, one unit
        return rows

    def fuse_shard(self, shard: str) -> dict:
        """The shard form: one whole shard, streamed into its outputs. A shard that cannot be
        read is reported in its summary; the other shards go on."""
        # The bar polls every second: a report every half second, not one call per pair.
        report = at_most_every(0.5, lambda done: self.counter.report.remote(shard, done))
        refused: list[Refused] = []
        try:
            with (
                shard_pairs(shard, self.job.limits, refused) as pairs,
                ShardSink(self.output, shard, self.job.metrics) as sink,
            ):
                for result in fuse_stream(self.fuser, pairs, self.options):
                    sink.put(result)
                    report(len(sink.rows))
                summary = sink.commit(refused)
        except Exception as exc:  # noqa: BLE001 - named in the manifest; the run goes on
            summary = {"input": shard, "error": f"{type(exc).__name__}: {exc}"}
        self.counter.report.remote(shard, summary.get("pairs", 0), finished=True)
        return {**summary, "node": self.node}
