"""The manifest: the commit record of a prep run. Shards it lists are the dataset; any
other file under the output folder is an unfinished run's and is never read."""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A local path or any pyarrow URI (file://, s3://, gs://, ...) -> (filesystem, path)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def write_json(fs: pafs.FileSystem, path: str, payload: dict) -> None:
    """Atomic on local disks (temp name, then rename); object stores make a single PUT visible
    at once anyway."""
    data = (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode()
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp"
        with fs.open_output_stream(tmp) as handle:
            handle.write(data)
        os.replace(tmp, path)
    else:
        with fs.open_output_stream(path) as handle:
            handle.write(data)


def read_json(fs: pafs.FileSystem, path: str) -> dict | None:
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        return json.loads(handle.read().decode())


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
