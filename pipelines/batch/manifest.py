"""A batch fusion's record, ``manifest.json`` beside its outputs: which model (pinned to a
version), which input, which settings, the counts, the failures. It is written ``running``
when a shard run starts and finished at the end; a rerun into the same output resumes only
when model and settings match, and is refused naming the file otherwise."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from data_prep.storage import filesystem, join, read_json, write_json

MANIFEST = "manifest.json"
METRICS_CSV = "metrics.csv"
FORMAT = "dwsfusion-batch-fuse"


def manifest(model: dict, settings: dict, identity: dict, counts: dict, **more) -> dict:
    return {"format": FORMAT, "model": model, "input": identity, "settings": settings, "counts": counts, **more}


def read_manifest(output: str) -> dict | None:
    """The manifest in a folder or object prefix, None where there is none."""
    fs, root = filesystem(output)
    return read_json(fs, join(root, MANIFEST))


def write_manifest(output: str, payload: dict) -> None:
    fs, root = filesystem(output)
    write_json(fs, join(root, MANIFEST), payload)


def same_run(previous: dict | None, model: dict, settings: dict, identity: dict | None = None) -> bool:
    """``previous`` was made by this model and these settings (and, given, this input)."""
    if not previous:
        return False
    same = previous.get("model", {}).get("uri") == model["uri"] and previous.get("settings") == settings
    return same and (identity is None or previous.get("input") == identity)


def refuse_other_run(previous: dict | None, where: str | Path, model: dict, settings: dict, identity=None) -> None:
    if previous and not same_run(previous, model, settings, identity):
        what = "input, model or settings" if identity else "model or settings"
        raise FileExistsError(f"{where}: holds fusions of another {what} (see its {MANIFEST})")


def shard_counts(summaries: list[dict], now: dict[str, dict], done_before: int) -> tuple[dict, list[str]]:
    """The counts of a shard run and its failures, named: ``summaries`` of every shard (now or
    before), ``now`` those of this run by input."""
    broken = [s for s in summaries if "error" in s]
    whole = [s for s in summaries if "error" not in s]
    failures = [f"{s['input']}: {s['error']}" for s in broken]
    failures += [f"{s['input']}: {f}" for s in summaries for f in s.get("refusals", []) + s.get("failures", [])]
    counts = {
        "shards": len(summaries),
        "shards_done_before": done_before,
        "shards_failed": len(broken),
        "pairs": sum(s["pairs"] for s in whole),
        "fused": sum(s["fused"] for s in whole),
        "fused_this_run": sum(s["fused"] for s in now.values() if "error" not in s),
        "failed": sum(s["failed"] for s in whole) + len(broken),
        "refused": sum(s["refused"] for s in whole),
    }
    return counts, failures


def pairs_per_node(rows) -> dict[str, int]:
    """Pairs fused per Ray node: ``rows`` are (node, pairs) of what this run fused."""
    nodes: collections.Counter = collections.Counter()
    for node, pairs in rows:
        nodes[node or "?"] += pairs
    return dict(nodes)


def load_packed(text: bytes | None) -> dict | None:
    return json.loads(text) if text else None
