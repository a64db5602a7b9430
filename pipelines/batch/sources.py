"""What batch fusion reads: the pairs of a folder, or the archive shards of its inputs.

A folder (ir/ + vi/, or MSRS test/) is listed on the driver and its pairs travel to the actors
as paths. Shards (archives, globs of them, folders or ``s3://``/``gs://`` prefixes holding
them) are only listed on the driver; the actor that takes a shard streams it from storage
(``pyarrow.fs``) and pairs its members as they pass, under the untrusted-archive rules of
``archives.py``. Either way a pair reaches the fuser as a ``dwsfusion.stream.EncodedPair``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from data_prep.storage import as_location, filesystem, is_uri
from dwsfusion.errors import UsageError
from dwsfusion.pairs import ImagePair, PairError, find_pairs, resolve_source
from dwsfusion.stream import EncodedPair

from .archives import ArchiveLimits, Refused, archive_kind, pair_members, tar_members, zip_members


def input_form(inputs: Sequence[str]) -> str:
    """'folder' for one local folder of pairs (ir/ + vi/ or MSRS), else 'shards'."""
    only = inputs[0] if len(inputs) == 1 else None
    if only is None or is_uri(only) or not Path(only).is_dir():
        return "shards"
    try:
        resolve_source(only)
    except PairError:
        return "shards"  # a folder of archives
    return "folder"


# ------------------------------------------------------------------ a folder
@dataclass
class FolderInput:
    pairs: list[ImagePair]
    unpaired: list  # files without a partner: refused, each named
    identity: dict  # the manifest's ``input``


def folder_input(folder: str) -> FolderInput:
    """The pairs of a local folder; a PairError when there are none."""
    ir_dir, vi_dir = resolve_source(folder)
    pairs, unpaired = find_pairs(ir_dir, vi_dir, strict=False)
    if not pairs:
        raise PairError(f"{folder}: no IR/VIS pairs found" + "".join(f"; {u}" for u in unpaired[:5]))
    return FolderInput(pairs, unpaired, {"kind": "folder", "path": str(Path(folder).resolve())})


def as_items(pairs: Sequence[ImagePair]) -> list[dict]:
    """Pairs as rows of a Ray dataset (absolute paths: an actor's working folder may differ)."""
    return [{"stem": p.stem, "ir": str(p.ir.resolve()), "vi": str(p.vi.resolve())} for p in pairs]


def items_as_pairs(batch: dict) -> list[EncodedPair]:
    """A Ray batch of ``as_items`` rows -> the pairs the fuser reads (files, read on its threads)."""
    return [
        EncodedPair(str(s), str(ir), str(vi)) for s, ir, vi in zip(batch["stem"], batch["ir"], batch["vi"], strict=True)
    ]


# ------------------------------------------------------------------ shards
def list_shards(inputs: Sequence[str]) -> list[str]:
    """Every archive the inputs name, in order: an archive, a glob of archives (its last path
    part: ``night/*.tar``) or a folder / object prefix holding archives (not recursive). A
    listing, nothing is read; a UsageError names an input that gives none."""
    shards: list[str] = []
    for given in inputs:
        fs, path = filesystem(given)
        parent, _, last = path.rstrip("/").rpartition("/")
        if any(c in last for c in "*?["):
            infos = fs.get_file_info(pafs.FileSelector(parent or "/", allow_not_found=True))
            found = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.base_name, last)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise UsageError(f"{given}: not found")
            found = [info.path] if info.is_file else [i.path for i in fs.get_file_info(pafs.FileSelector(path))]
            if info.is_file and archive_kind(info.path) is None:
                raise UsageError(f"{given}: not a .tar, .tar.gz, .tgz or .zip archive")
        archives = sorted(p for p in found if archive_kind(p) is not None)
        if not archives:
            raise UsageError(f"{given}: holds no .tar, .tar.gz, .tgz or .zip archive")
        shards += [as_location(given, p) for p in archives]
    return shards


def shard_name(shard: str) -> str:
    """``s3://b/night-000001.tar.gz`` -> ``night-000001``: the name of its outputs."""
    base = shard.rstrip("/").rpartition("/")[2]
    return next(base[: -len(s)] for s in (".tar.gz", ".tgz", ".tar", ".zip") if base.lower().endswith(s))


def shard_names(shards: Sequence[str]) -> dict[str, str]:
    """Output name -> shard; two shards of one name would write the same output (refused)."""
    names: dict[str, str] = {}
    for shard in shards:
        name = shard_name(shard)
        if name in names:
            raise UsageError(f"{names[name]} and {shard} would both write {name}.tar: rename one, or fuse them apart")
        names[name] = shard
    return names


@contextmanager
def shard_pairs(shard: str, limits: ArchiveLimits, refused: list[Refused]) -> Iterator[Iterator[EncodedPair]]:
    """The shard opened (an error here fails the shard: missing, unreachable) and its pairs as
    a stream (an error while reading them is a refusal, appended to ``refused`` with every
    member not used: the pairs read so far are kept)."""
    fs, path = filesystem(shard)
    if archive_kind(shard) == "zip":  # a zip's directory is at its end: a seekable file
        handle = fs.open_input_file(path)
        members = zip_members(handle)
    else:
        handle = fs.open_input_stream(path, compression=None)
        members = tar_members(handle)
    with handle:
        yield (
            EncodedPair(pair.key, pair.ir_member, pair.vi_member, pair.ir, pair.vi)
            for pair in pair_members(members, limits, refused)
        )
