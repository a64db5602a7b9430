"""The manifest: the commit record of a prep run. Shards it lists are the dataset; any
other file under the output folder is an unfinished run's and is never read."""

from __future__ import annotations

from .storage import filesystem, read_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def load_manifest(out: str) -> dict:
    fs, root = filesystem(out)
    manifest = read_json(fs, f"{root}/{MANIFEST}")
    if manifest is None:
        raise FileNotFoundError(f"{out}: no {MANIFEST} (not prepared, or the run did not finish)")
    return manifest


def shard_uris(out: str, split: str) -> list[str]:
    """Absolute paths/URIs of one split's shards, as the manifest lists them."""
    manifest = load_manifest(out)
    base = out.rstrip("/")
    return [f"{base}/{shard['path']}" for shard in manifest["shards"] if shard["split"] == split]
