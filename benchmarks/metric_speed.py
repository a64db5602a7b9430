"""Seconds per pair of the 14-metric suite: the NumPy suite (``dwsfusion.metrics``) and the torch
suite (``dwsfusion.metrics_torch``) on this CPU, and, given ``--authors DIR``, the DWSFusion
authors' own evaluation code on the metrics of their tables that it computes per image (MI, SD,
VIF, Qabf, PSNR) against ours on the same 576x768 TNO pairs, values compared.

Pairs: the authors' fused TNO images with their sources from ../shared when present, else
generated scenes with a mean-fusion image. The authors' code is not part of this repository:
``DIR`` is a folder holding their ``Fusion_metric_python/Metric_Python`` package (from their public
release), imported from there as they wrote it. With it, the comparison runs twice: warm (after
a warm-up call on each pair) and cold (the process's first three 576x768 pairs, before anything
else ran: what a user sees on every ``evaluate`` of a small folder).
Run: python benchmarks/metric_speed.py [--authors DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from common import SHARED, Stopwatch, write_result

from dwsfusion import metrics_torch
from dwsfusion.evaluate import gray_u8
from dwsfusion.metrics import METRIC_NAMES, compute_metrics
from dwsfusion.samples import DEFAULT_SIZES, make_scene

AUTHORS_METRICS = ("MI", "SD", "VIF", "Qabf", "PSNR")  # what their evaluation_one computes per image (and SSIM)


def triples() -> tuple[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
    tno, fused = SHARED / "data" / "TNO", SHARED / "official" / "tno_fused"
    if fused.is_dir():
        names = sorted(p.name for p in fused.iterdir())
        return "TNO (25 pairs, authors' fused images)", [
            (n, gray_u8(tno / "ir" / n), gray_u8(tno / "vi" / n), gray_u8(fused / n)) for n in names
        ]
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate(DEFAULT_SIZES):
        ir, vi = make_scene(rng, h, w)
        vi = vi.mean(-1).astype(np.uint8)
        out.append((f"scene_{i}", ir, vi, ((ir.astype(np.uint16) + vi) // 2).astype(np.uint8)))
    return "generated scenes (6 pairs, mean fusion)", out


def per_metric_seconds(compute, data, names=METRIC_NAMES) -> dict[str, float]:
    seconds = dict.fromkeys(names, 0.0)
    for _, a, b, f in data:
        compute(a, b, f, names[:1])  # warm-up (caches, threads)
        for name in names:
            started = Stopwatch()
            compute(a, b, f, (name,))
            seconds[name] += started.elapsed() / len(data)
    return seconds


def authors_functions(folder: Path) -> dict:
    """Their per-image functions with the inputs their evaluation_one gives them (int32 for MI,
    float32 for the rest)."""
    sys.path.insert(0, str(folder))
    from Fusion_metric_python.Metric_Python import Metric as theirs

    return {
        "MI": lambda a, b, f: theirs.MI_function(a.astype(np.int32), b.astype(np.int32), f.astype(np.int32)),
        "SD": lambda a, b, f: theirs.SD_function(f.astype(np.float32)),
        "VIF": lambda a, b, f: theirs.VIF_function(*(x.astype(np.float32) for x in (a, b, f))),
        "Qabf": lambda a, b, f: theirs.Qabf_function(*(x.astype(np.float32) for x in (a, b, f))),
        "PSNR": lambda a, b, f: theirs.PSNR_function(*(x.astype(np.float32) for x in (a, b, f))),
    }


def cold_against_the_authors(folder: Path, data, count: int = 3) -> dict:
    """As a user meets it: the first ``count`` 576x768 pairs, no warm-up, ours first in this
    process (main runs this before anything else), then theirs on the same pairs."""
    pairs = [t for t in data if t[1].shape == (576, 768)][:count]
    ours = []
    for _, a, b, f in pairs:
        started = Stopwatch()
        compute_metrics(a, b, f, AUTHORS_METRICS)
        ours.append(started.elapsed())
    functions, theirs = authors_functions(folder), []
    for _, a, b, f in pairs:
        started = Stopwatch()
        for fn in functions.values():
            fn(a, b, f)
        theirs.append(started.elapsed())
    return {
        "pairs": f"the first {len(pairs)} TNO pairs of 576x768, no warm-up, in a fresh process",
        "ours_seconds_per_pair": statistics.mean(ours),
        "ours_first_pair_seconds": ours[0],
        "authors_seconds_per_pair": statistics.mean(theirs),
        "speedup": sum(theirs) / sum(ours),
    }


def against_the_authors(folder: Path, data) -> dict:
    """Their functions against the faster of our suites, warm, on the 576x768 pairs."""
    functions = authors_functions(folder)
    pairs = [t for t in data if t[1].shape == (576, 768)]
    theirs_seconds, ours = [], {"numpy": [], "torch": []}
    worst = 0.0
    for _, a, b, f in pairs:
        started = Stopwatch()
        values = {name: fn(a, b, f) for name, fn in functions.items()}
        theirs_seconds.append(started.elapsed())
        for label, compute in (("numpy", compute_metrics), ("torch", metrics_torch.compute_metrics)):
            compute(a, b, f, AUTHORS_METRICS)  # warm-up
            started = Stopwatch()
            got = compute(a, b, f, AUTHORS_METRICS)
            ours[label].append(started.elapsed())
        worst = max(worst, max(abs(got[k] - float(v)) / abs(float(v)) for k, v in values.items()))
    suite = min(ours, key=lambda k: statistics.mean(ours[k]))
    mine, authors = statistics.mean(ours[suite]), statistics.mean(theirs_seconds)
    return {
        "metrics": list(AUTHORS_METRICS),
        "pairs": f"{len(pairs)} TNO pairs of 576x768",
        "authors_seconds_per_pair": authors,
        "ours_seconds_per_pair": mine,
        "ours_suite": suite,
        "ours_seconds_per_pair_by_suite": {k: statistics.mean(v) for k, v in ours.items()},
        "speedup": authors / mine,
        "max_relative_difference": worst,
        "goal_speedup": 20.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--authors", type=Path, help="folder holding the authors' Fusion_metric_python package")
    args = parser.parse_args()
    source, data = triples()
    cold = cold_against_the_authors(args.authors, data) if args.authors else None  # first: nothing warm yet
    numpy_seconds = per_metric_seconds(compute_metrics, data)
    torch_seconds = per_metric_seconds(metrics_torch.compute_metrics, data)
    result = {
        "input": source,
        "mean_pixels_per_pair": statistics.mean(a.size for _, a, _, _ in data),
        "torch_threads": torch.get_num_threads(),
        "seconds_per_pair_mean": sum(numpy_seconds.values()),
        "seconds_per_metric_mean": {k: round(v, 5) for k, v in numpy_seconds.items()},
        "torch_suite_seconds_per_pair_mean": sum(torch_seconds.values()),
        "torch_suite_seconds_per_metric_mean": {k: round(v, 5) for k, v in torch_seconds.items()},
    }
    if args.authors:
        result["authors"] = against_the_authors(args.authors, data)
        result["authors_cold"] = cold
    write_result("metric_speed", result)


if __name__ == "__main__":
    main()
