"""Seconds per pair of the full 14-metric suite (``dwsfusion.metrics.compute_metrics``).

Uses the authors' fused TNO images with their sources from ../shared when present, else
generated scenes with a mean-fusion image. Run: python benchmarks/metric_speed.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from common import SHARED, write_result

from dwsfusion.evaluate import gray_u8
from dwsfusion.metrics import METRIC_NAMES, compute_metrics
from dwsfusion.samples import DEFAULT_SIZES, make_scene


def triples() -> tuple[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    tno, fused = SHARED / "data" / "TNO", SHARED / "official" / "tno_fused"
    if fused.is_dir():
        names = sorted(p.name for p in fused.iterdir())
        return "TNO (25 pairs, authors' fused images)", [
            (gray_u8(tno / "ir" / n), gray_u8(tno / "vi" / n), gray_u8(fused / n)) for n in names
        ]
    rng = np.random.default_rng(0)
    out = []
    for h, w in DEFAULT_SIZES:
        ir, vi = make_scene(rng, h, w)
        vi = vi.mean(-1).astype(np.uint8)
        out.append((ir, vi, ((ir.astype(np.uint16) + vi) // 2).astype(np.uint8)))
    return "generated scenes (6 pairs, mean fusion)", out


def main() -> None:
    source, data = triples()
    per_pair, per_metric = [], dict.fromkeys(METRIC_NAMES, 0.0)
    for a, b, f in data:
        start = time.perf_counter()
        compute_metrics(a, b, f)
        per_pair.append(time.perf_counter() - start)
        for name in METRIC_NAMES:  # one metric at a time, for the breakdown
            start = time.perf_counter()
            compute_metrics(a, b, f, (name,))
            per_metric[name] += (time.perf_counter() - start) / len(data)
    pixels = statistics.mean(a.size for a, _, _ in data)
    write_result(
        "metric_speed",
        {
            "input": source,
            "mean_pixels_per_pair": pixels,
            "seconds_per_pair_mean": statistics.mean(per_pair),
            "seconds_per_metric_mean": {k: round(v, 5) for k, v in per_metric.items()},
        },
    )


if __name__ == "__main__":
    main()
