"""Patch extraction: registered IR/VIS pairs -> Parquet shards + manifest, on Ray Data."""

from .config import PrepConfig
from .extract import PrepResult, run_prep
from .manifest import load_manifest, shard_uris
from .reader import patch_arrays, read_patches

__all__ = ["PrepConfig", "PrepResult", "load_manifest", "patch_arrays", "read_patches", "run_prep", "shard_uris"]
