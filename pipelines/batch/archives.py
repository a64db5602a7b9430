"""Untrusted archives of IR/VIS pairs in, fused archives out.

Two layouts are read, in any mix: image members in ``ir``/``infrared`` and ``vi``/``vis``/
``visible`` folders at any depth (``night/ir/0001.png`` pairs with ``night/vi/0001.jpg``, key
``night/0001``), and WebDataset-style members ``<key>.ir.<ext>`` + ``<key>.vi.<ext>``. Members
are read in one streaming pass (``pair_members``), never extracted to disk and never trusted:

- names are checked first: no absolute paths, no ``..``, no drive letters or backslashes (path
  traversal); nothing is ever written under a member's name;
- only regular files are read: symlinks, hard links, devices and FIFOs are refused;
- limits on the member count, each member's size and the total uncompressed size are enforced
  on the bytes actually read (a zip header's declared size is not trusted), and on the pixel
  count from the image header before any decode (decompression bombs).

A refused member is reported with its reason and the rest go on. Output archives are written
under a temporary name and renamed when complete.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from dwsfusion.color import IMAGE_SUFFIXES, MAX_PIXELS, header_pixels
from dwsfusion.errors import UsageError
from dwsfusion.files import atomic_path
from dwsfusion.pairs import IR_FOLDER_NAMES, VIS_FOLDER_NAMES

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 100_000
    max_member_bytes: int = 512 << 20  # one image file
    max_total_bytes: int = 64 << 30  # everything extracted
    max_pixels: int = MAX_PIXELS  # per image, from its header


@dataclass(frozen=True)
class Refused:
    member: str  # the member name as stored in the archive, or a file path
    reason: str

    def __str__(self) -> str:
        return f"{self.member}: {self.reason}"


def archive_kind(path: str | os.PathLike) -> str | None:
    """'tar' (plain or compressed), 'zip', or None for anything else (a folder)."""
    name = str(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


ROLE_NAMES = {**dict.fromkeys(IR_FOLDER_NAMES, "ir"), **dict.fromkeys(VIS_FOLDER_NAMES, "vi")}
NOT_A_PAIR_MEMBER = "not an image in an ir/ or vi/ folder, nor <key>.ir.<ext> / <key>.vi.<ext> (skipped)"


def member_role(name: str) -> tuple[str, str] | str:
    """A member name -> (pair key, 'ir' | 'vi'), or the reason it is not read. The key is the
    path without the ir/vi folder and the suffixes: ``night/ir/0001.png`` and
    ``night/0001.ir.png`` both give ``night/0001``."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute or Windows-style path refused (path traversal)"
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        return "'..' in the path refused (path traversal)"
    if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
        return NOT_A_PAIR_MEMBER
    folder = path.parts[-2].lower() if len(path.parts) > 1 else ""
    if folder in ROLE_NAMES:
        return "/".join((*path.parts[:-2], path.stem)), ROLE_NAMES[folder]
    stem, _, role = path.stem.rpartition(".")  # WebDataset: <key>.<role>.<ext>
    if stem and role.lower() in ROLE_NAMES:
        return "/".join((*path.parts[:-1], stem)), ROLE_NAMES[role.lower()]
    return NOT_A_PAIR_MEMBER


class Budget:
    """What one archive has used of its limits so far."""

    def __init__(self, limits: ArchiveLimits):
        self.limits, self.members, self.total = limits, 0, 0


def read_limited(source: BinaryIO, sink: BinaryIO, budget: Budget) -> str | None:
    """Copy one member into ``sink`` within the limits: the member's and the running total's
    bytes, counted as read, and the pixel count its image header declares (checked on the first
    chunk, before anything is decoded). Returns the refusal reason (``sink`` then holds a prefix
    to throw away), or None."""
    limits, written = budget.limits, 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > limits.max_member_bytes:
            return f"larger than the per-member limit of {limits.max_member_bytes} bytes"
        if budget.total + written > limits.max_total_bytes:
            return f"total uncompressed size would exceed {limits.max_total_bytes} bytes"
        if written == len(chunk):
            pixels = header_pixels(chunk[: 1 << 16])
            if pixels is not None and pixels > limits.max_pixels:
                return f"image header declares {pixels} pixels, above the limit of {limits.max_pixels}"
        sink.write(chunk)
    budget.total += written
    return None


def tar_members(source: str | os.PathLike | BinaryIO) -> Iterator[tuple[str, str | None, BinaryIO | None]]:
    """(name, refusal or None, stream) for each member, in one streaming pass (gzip too): a
    path, or any readable stream (an object-store download), never seeked."""
    opened = {"fileobj": source} if hasattr(source, "read") else {"name": source}
    with tarfile.open(mode="r|*", **opened) as archive:
        for info in archive:
            if info.isdir():
                continue
            if not info.isfile():
                yield info.name, "link or special file refused (only regular files are read)", None
                continue
            yield info.name, None, archive.extractfile(info)


def zip_members(source: str | os.PathLike | BinaryIO) -> Iterator[tuple[str, str | None, BinaryIO | None]]:
    """The same for a zip: a path or a seekable file (its directory is at the end)."""
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) not in (0, 0o100000):  # a symlink or special file
                yield info.filename, "link or special file refused (only regular files are read)", None
                continue
            with archive.open(info) as stream:
                yield info.filename, None, stream


UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError)  # an archive cut short or corrupt


@dataclass
class MemberPair:
    """One IR/VIS pair read from an archive: its key, both encoded images and member names."""

    key: str
    ir: bytes
    vi: bytes
    ir_member: str
    vi_member: str


class _Pending:
    """Members waiting for their partner: in memory up to ``spill_bytes``, then in a temporary
    folder on this machine (the ir/ + vi/ layout stores every IR before any VIS)."""

    def __init__(self, spill_bytes: int):
        self.items: dict[tuple[str, str], tuple[str, bytes | Path]] = {}
        self.memory, self.spill_bytes, self._folder = 0, spill_bytes, None

    def put(self, key: str, role: str, member: str, data: bytes) -> None:
        if self.memory + len(data) <= self.spill_bytes:
            self.items[key, role] = member, data
            self.memory += len(data)
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="dwsfusion-pairing-")
        spilled = Path(self._folder.name) / str(len(self.items))
        spilled.write_bytes(data)
        self.items[key, role] = member, spilled

    def take(self, key: str, role: str) -> tuple[str, bytes] | None:
        if (key, role) not in self.items:
            return None
        member, data = self.items.pop((key, role))
        if isinstance(data, Path):
            data, _ = data.read_bytes(), data.unlink()
        else:
            self.memory -= len(data)
        return member, data

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def pair_members(
    members: Iterator[tuple[str, str | None, BinaryIO | None]],
    limits: ArchiveLimits,
    refused: list[Refused],
    spill_bytes: int = 256 << 20,
) -> Iterator[MemberPair]:
    """Pair an archive's members (``tar_members``/``zip_members``) as they stream past: each
    pair is yielded as soon as its second member is read. Every member not used is appended to
    ``refused`` with its reason, unpaired ones when the archive ends; a corrupt or truncated
    archive ends the pass with a refusal naming where it stopped."""
    budget, pending, used = Budget(limits), _Pending(spill_bytes), set()
    try:
        for name, refusal, stream in members:
            budget.members += 1
            if budget.members > limits.max_members:
                refusal = f"beyond the member count limit of {limits.max_members}"
            role = member_role(name) if refusal is None else refusal
            if isinstance(role, str):
                refused.append(Refused(name, role))
                continue
            key, role = role
            if (key, role) in used:
                refused.append(Refused(name, f"duplicate {role} member for key {key}"))
                continue
            sink = io.BytesIO()
            reason = read_limited(stream, sink, budget)
            if reason:
                refused.append(Refused(name, reason))
                continue
            used.add((key, role))
            partner = pending.take(key, "vi" if role == "ir" else "ir")
            if partner is None:
                pending.put(key, role, name, sink.getvalue())
                continue
            (ir_member, ir), (vi_member, vi) = ((name, sink.getvalue()), partner)[:: 1 if role == "ir" else -1]
            yield MemberPair(key, ir, vi, ir_member, vi_member)
    except UNREADABLE as exc:
        refused.append(Refused("(archive)", f"unreadable archive, stopped here ({type(exc).__name__}: {exc})"))
    finally:
        for (key, role), (member, _) in pending.items.items():
            partner = "visible" if role == "ir" else "infrared"
            refused.append(Refused(member, f"no {partner} partner for key {key} in the archive"))
        pending.close()


def write_archive(members: Iterable[tuple[str, bytes]], target: str | os.PathLike) -> Path:
    """Pack ``(name, bytes)`` members, as they come, into ``target`` (.tar, .tar.gz, .tgz or
    .zip), atomically: a temporary name beside it, then a rename."""
    target = Path(target)
    kind = archive_kind(target)
    if kind is None:
        raise UsageError(f"{target}: output archive must end in .tar, .tar.gz, .tgz or .zip")
    with atomic_path(target) as tmp:
        if kind == "zip":
            # PNGs are compressed already: store them; text members are deflated.
            with zipfile.ZipFile(tmp, "w") as out:
                for name, data in members:
                    method = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
                    out.writestr(name, data, compress_type=method)
        else:
            mode = "w:gz" if str(target).lower().endswith(("gz", ".tgz")) else "w"
            with tarfile.open(tmp, mode) as out:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                    out.addfile(info, io.BytesIO(data))
    return target


def read_archive_member(archive: str | os.PathLike, name: str) -> bytes | None:
    """One member's bytes (used to read a finished output's manifest), None if absent."""
    archive = Path(archive)
    try:
        if archive_kind(archive) == "zip":
            with zipfile.ZipFile(archive) as handle:
                return handle.read(name) if name in handle.namelist() else None
        with tarfile.open(archive, "r:*") as handle:
            try:
                member = handle.extractfile(name)
            except KeyError:
                return None
            return member.read() if member else None
    except (tarfile.TarError, zipfile.BadZipFile, OSError):
        return None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
