"""Patch extraction: registered IR/VIS pairs -> Parquet shards + manifest, on Ray Data."""

from .config import PrepConfig
from .extract import PrepResult, run_prep
from .manifest import load_manifest, shard_uris

__all__ = ["PrepConfig", "PrepResult", "load_manifest", "run_prep", "shard_uris"]
