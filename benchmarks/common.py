"""Helpers shared by the benchmark scripts: where ../shared is, result files, and the one
timing harness (``Stopwatch``, ``timed``)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DWSFUSION_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, result: dict, echo: bool = True) -> Path:
    """Write ``benchmarks/results/<name>.json`` (atomically) and print it (unless ``echo`` is off)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    if echo:
        print(json.dumps(payload, indent=2))
    return path


def link_shared_pairs(root: Path, repeat: int = 1) -> list[Path]:
    """Symlink TNO + RoadScene from ../shared into ``root/ir`` and ``root/vi`` as one source,
    named ``<dataset>_<stem>`` (plus ``_<k>`` when each pair is linked ``repeat`` times, so
    throughput runs see many distinct pairs). Returns every link."""
    links = []
    for sub in ("ir", "vi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for dataset in ("TNO", "RoadScene"):
        src = SHARED / "data" / dataset
        for ir in sorted((src / "ir").iterdir()):
            for k in range(repeat):
                copy = f"_{k:03d}" if repeat > 1 else ""
                for path, sub in ((ir, "ir"), (src / "vi" / ir.name, "vi")):
                    link = root / sub / f"{dataset}_{ir.stem}{copy}{ir.suffix}"
                    os.symlink(path, link)
                    links.append(link)
    return links


# ------------------------------------------------------------------ the one timing harness
class Stopwatch:
    """Wall time (``time.perf_counter``) from when it starts: ``elapsed()`` while it runs, and
    ``seconds`` frozen when its ``with`` block ends (or at ``stop()``). Every benchmark times
    with this and ``timed``, so that they all measure the same way."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stop(self) -> float:
        self.seconds = self.elapsed()
        return self.seconds

    def __enter__(self) -> Stopwatch:
        self.started, self.seconds = time.perf_counter(), None
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def timed(fn, repeats: int, warmup: int = 2, sync=None) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones; ``sync``
    (e.g. a CUDA synchronise) runs before each timing starts and stops, so that no call is
    timed with another's queued work."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        with Stopwatch() as clock:
            fn()
            sync()
        times.append(clock.seconds)
    return times
