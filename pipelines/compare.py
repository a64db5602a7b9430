"""``dwsfusion compare``: many fusion methods scored by one metric code on the same pairs.

    list the pairs -> one Fuser per method (a folder, a checkpoint or models:/ URI, a baseline)
      -> every method named that lacks an image, before any scoring (or the common pairs)
      -> score: in this process, or on Ray actors when there are many methods x pairs
      -> leaderboard (means, ranks, paired tests) + costs of the models
      -> leaderboard.csv, per_pair.csv, leaderboard.md, costs.csv, crops.png,
         distributions.png, compare.json and compare.html in the output folder
      -> optionally an MLflow run holding the means and every file

The numbers come from ``dwsfusion.compare`` (no Ray, no MLflow); this module adds the model
registry, the Ray actors and MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import Field, field_validator
from tqdm import tqdm

from data_prep.ray_session import ensure_ray
from dwsfusion.checkpoints import load_generator
from dwsfusion.compare import (
    CompareError,
    Fuser,
    Leaderboard,
    Method,
    Scores,
    build_fusers,
    leaderboard,
    missing_images,
    model_costs,
    score_pairs,
)
from dwsfusion.compare_report import write_report
from dwsfusion.model import Generator
from dwsfusion.pairs import find_pairs

from .config import CompareSettings
from .runtime import set_experiment, tracking_uri, use_tracking

RAY_ABOVE = 500  # method-pairs from which the default is Ray actors (below: Ray's start costs more)
COMPARE_EXPERIMENT = "dwsfusion-compare"


class CompareJob(CompareSettings):
    """One comparison: the settings, the pairs, the methods and where the report goes."""

    ir: str
    vi: str
    methods: tuple[str, ...] = Field(min_length=1)  # NAME=SOURCE each
    output: str
    tracking_uri: str | None = None  # for models:/ methods, and where --mlflow logs
    log_mlflow: bool = False

    @field_validator("methods", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return (value,) if isinstance(value, str) else value


@dataclass
class CompareResult:
    board: Leaderboard
    scores: Scores
    paths: dict[str, Path]
    failures: dict[str, list[str]] = field(default_factory=dict)  # method -> "<file>: <reason>"
    mlflow_run_id: str | None = None


def _generator_loader(explicit_tracking_uri: str | None):
    """A model method's source -> its generator: a checkpoint from disk, a models:/ or runs:/
    URI through the registry of ``tracking_uri`` (the same default as ``fuse --model``; MLflow
    imported only then: folder and baseline methods need none)."""

    def load(source: str) -> Generator:
        if not source.startswith(("models:/", "runs:/")):
            return load_generator(source)
        from .registry import load_registered_generator  # MLflow: only for a registered model

        use_tracking(tracking_uri(explicit_tracking_uri))
        try:
            return load_registered_generator(source)
        except Exception as exc:  # MLflow's own errors vary by store; the user needs the URI and why
            raise CompareError(f"{source}: cannot load the model ({exc})") from None

    return load


def _methods(job: CompareJob) -> list[Method]:
    methods = [Method.parse(spec) for spec in job.methods]
    seen: set[str] = set()
    for method in methods:
        if method.name in seen:
            raise CompareError(f"--method {method.name}: the name is given twice")
        seen.add(method.name)
    return methods


def _workers(job: CompareJob, methods: int, pairs: int) -> int:
    if job.workers is not None:
        return job.workers
    return 1 if methods * pairs < RAY_ABOVE else max(1, min(os.cpu_count() or 1, pairs))


def _score_here(fusers: list[Fuser], pairs, metrics, progress: bool) -> Scores:
    with tqdm(total=len(pairs), desc="compare", unit="pair", disable=not progress) as bar:
        return score_pairs(fusers, pairs, metrics, on_pair=lambda: bar.update(1))


class _Scorer:
    """A Ray actor holding every method's fuser (models loaded once), scoring chunks of pairs."""

    def __init__(self, fusers: list[Fuser], metrics: tuple[str, ...]):
        torch.set_num_threads(1)  # one CPU per actor: the actors are the parallelism
        self.fusers, self.metrics = fusers, metrics

    def score(self, pairs) -> tuple[int, Scores]:
        return len(pairs), score_pairs(self.fusers, pairs, self.metrics)


def _score_on_ray(fusers: list[Fuser], pairs, metrics, workers: int, progress: bool) -> Scores:
    """Chunks of pairs through a pool of ``workers`` actors; the bar counts pairs as chunks finish."""
    import ray  # only for a large comparison: the small ones never start Ray
    from ray.util import ActorPool

    ensure_ray(dashboard=False)
    shared = ray.put(fusers)
    actors = [ray.remote(num_cpus=1)(_Scorer).remote(shared, metrics) for _ in range(workers)]
    size = max(1, len(pairs) // (workers * 4))
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    scores = Scores.empty(fusers, metrics)
    try:
        with tqdm(total=len(pairs), desc="compare", unit="pair", disable=not progress) as bar:
            pool = ActorPool(actors)
            for done, part in pool.map_unordered(lambda actor, chunk: actor.score.remote(chunk), chunks):
                scores.merge(part)
                bar.update(done)
    finally:
        for actor in actors:
            ray.kill(actor)
    return scores


def _log_to_mlflow(job: CompareJob, board: Leaderboard, paths: dict[str, Path]) -> str:
    import mlflow  # only with --mlflow

    uri = tracking_uri(job.tracking_uri)
    set_experiment(uri, COMPARE_EXPERIMENT)
    with mlflow.start_run(run_name=job.title) as run:
        mlflow.log_params({"pairs": len(board.pairs), "ir": job.ir, "vi": job.vi, "metrics": ",".join(board.metrics)})
        mlflow.log_params({f"method.{spec.partition('=')[0]}": spec.partition("=")[2] for spec in job.methods})
        for method in board.methods:
            figures = {f"{method}/{k}": e.mean for k, e in board.entries[method].items() if e.mean == e.mean}
            mlflow.log_metrics(figures)
        for path in paths.values():
            mlflow.log_artifact(str(path))
        return run.info.run_id


def run_compare(job: CompareJob, progress: bool = True) -> CompareResult:
    """Score every method of ``job`` on its pairs and write the report (module docstring)."""
    pairs, _ = find_pairs(job.ir, job.vi, strict=True)
    methods = _methods(job)
    fusers = build_fusers(methods, _generator_loader(job.tracking_uri))
    missing = missing_images(fusers, pairs)
    if missing and job.missing == "error":
        lines = [
            f"{name} ({next(f.method.source for f in fusers if f.method.name == name)}) has no image for "
            f"{len(stems)} of {len(pairs)} pair(s): {', '.join(stems[:10])}" + (" ..." if len(stems) > 10 else "")
            for name, stems in missing.items()
        ]
        raise CompareError("; ".join(lines) + " (--missing common scores every method on the pairs all have)")
    workers = _workers(job, len(methods), len(pairs))
    if workers > 1:
        scores = _score_on_ray(fusers, pairs, job.metrics, workers, progress)
    else:
        scores = _score_here(fusers, pairs, job.metrics, progress)
    board = leaderboard(scores, job.missing)
    costs = {f.method.name: model_costs(f.generator) for f in fusers if f.generator is not None} if job.costs else {}
    by_stem = {p.stem: p for p in pairs}
    figure_pairs = [by_stem[s] for s in board.pairs[: job.figure_pairs]]
    paths = write_report(Path(job.output), scores, board, costs, fusers, figure_pairs, job.crop, job.title)
    run_id = _log_to_mlflow(job, board, paths) if job.log_mlflow else None
    failures = {name: problems for name, problems in scores.failures.items() if problems}
    return CompareResult(board, scores, paths, failures, run_id)
