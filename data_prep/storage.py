"""Where things are: a local path or an object-store URI, with one set of rules for every stage.

A *location* is what a user gives: a local path, ``file://...`` (local too), or a URI pyarrow
opens (``s3://``, ``gs://``, ...). Stages turn a location into ``(filesystem, path)`` with
``filesystem`` and back with ``as_location``; ``is_uri`` is the one test of "object storage"."""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs


def is_uri(location: str | os.PathLike) -> bool:
    """Object storage (``s3://``, ``gs://``, ...); a plain path and ``file://`` are local."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str) -> str:
    """A local location as a plain path (``file:///x`` -> ``/x``); anything else as given."""
    return location.removeprefix("file://")


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """A local path or any pyarrow URI (file://, s3://, gs://, ...) -> (filesystem, path)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def as_location(given: str, path: str) -> str:
    """A pyarrow ``path`` found under the location ``given`` back to what a worker opens: the
    URI's scheme again (pyarrow drops it), or a local path."""
    return f"{given.split('://', 1)[0]}://{path}" if is_uri(given) else path


def join(root: str, *names: str) -> str:
    """``root/name/...`` for a local path, a pyarrow path or a URI alike."""
    return "/".join([root.rstrip("/"), *names])


def location_exists(location: str) -> bool:
    """A folder or object prefix exists: a local path or any URI pyarrow reads. The one check
    behind every "does this run / sweep / step exist" decision, so a run in object storage
    resumes (or refuses to start over) as a local one does."""
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


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
    """The JSON file at ``path``, or None where there is none."""
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        return json.loads(handle.read().decode())
