"""Untrusted archives of IR/VIS pairs in, fused archives out.

Input convention: image members whose parent folder is ``ir``/``infrared`` or
``vi``/``vis``/``visible`` (at any depth, e.g. ``tno/ir/01.png``), paired by file stem.
Extraction is member by member and never trusts the archive:

- names are checked before anything is written: no absolute paths, no ``..``, no drive
  letters or backslashes (path traversal);
- only regular files are read: symlinks, hard links, devices and FIFOs are refused, so
  nothing can point out of the destination;
- limits on the member count, each member's size and the total uncompressed size are
  enforced on the bytes actually read (a zip header's declared size is not trusted), and on
  the pixel count from the image header before any decode (decompression bombs).

A refused member is reported with its reason and the batch goes on. Output archives are
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
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


def member_target(name: str) -> tuple[str, str] | str:
    """A member name -> ('ir' | 'vi', file name), or the reason it is not extracted."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute or Windows-style path refused (path traversal)"
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        return "'..' in the path refused (path traversal)"
    if len(parts) < 2 or PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES or parts[-1].startswith("."):
        return "not an image under an ir/ or vi/ folder (skipped)"
    folder = parts[-2].lower()
    if folder in IR_FOLDER_NAMES:
        return "ir", parts[-1]
    if folder in VIS_FOLDER_NAMES:
        return "vi", parts[-1]
    return "not an image under an ir/ or vi/ folder (skipped)"


class _Budget:
    def __init__(self, limits: ArchiveLimits):
        self.limits, self.members, self.total = limits, 0, 0


class _Refusal(Exception):
    pass


def _copy_limited(source: BinaryIO, target: Path, budget: _Budget) -> str | None:
    """Copy at most the limits' bytes; returns the refusal reason (nothing written), or None."""
    limits, written = budget.limits, 0
    try:
        with atomic_path(target) as tmp, tmp.open("wb") as out:
            head = b""
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > limits.max_member_bytes:
                    raise _Refusal(f"larger than the per-member limit of {limits.max_member_bytes} bytes")
                if budget.total + written > limits.max_total_bytes:
                    raise _Refusal(f"total uncompressed size would exceed {limits.max_total_bytes} bytes")
                if not head:
                    head = chunk[: 1 << 16]
                    pixels = header_pixels(head)
                    if pixels is not None and pixels > limits.max_pixels:
                        raise _Refusal(f"image header declares {pixels} pixels, above the limit of {limits.max_pixels}")
                out.write(chunk)
    except _Refusal as refusal:
        return str(refusal)
    budget.total += written
    return None


def _tar_members(path: Path) -> Iterator[tuple[str, str | None, BinaryIO | None]]:
    """(name, refusal or None, stream) for each member, in one streaming pass (gzip too)."""
    with tarfile.open(path, mode="r|*") as archive:
        for info in archive:
            if info.isdir():
                continue
            if not info.isfile():
                yield info.name, "link or special file refused (only regular files are extracted)", None
                continue
            yield info.name, None, archive.extractfile(info)


def _zip_members(path: Path) -> Iterator[tuple[str, str | None, BinaryIO | None]]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) not in (0, 0o100000):  # a symlink or special file
                yield info.filename, "link or special file refused (only regular files are extracted)", None
                continue
            with archive.open(info) as stream:
                yield info.filename, None, stream


def extract_pairs(archive: str | os.PathLike, dest: str | os.PathLike, limits: ArchiveLimits) -> list[Refused]:
    """Extract the IR/VIS images of ``archive`` into ``dest/ir`` and ``dest/vi`` (flattened
    by file name). Returns every member not extracted, with the reason."""
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    if kind is None:
        raise UsageError(f"{archive}: not a .tar, .tar.gz, .tgz or .zip archive")
    for folder in ("ir", "vi"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    members = _zip_members(archive) if kind == "zip" else _tar_members(archive)
    budget, refused, seen = _Budget(limits), [], set()
    try:
        for name, refusal, stream in members:
            budget.members += 1
            if budget.members > limits.max_members:
                refusal = f"beyond the member count limit of {limits.max_members}"
            target = member_target(name) if refusal is None else refusal
            if isinstance(target, str):
                refused.append(Refused(name, target))
                continue
            folder, file_name = target
            if (folder, file_name) in seen:
                refused.append(Refused(name, f"duplicate of an earlier {folder}/{file_name}"))
                continue
            reason = _copy_limited(stream, dest / folder / file_name, budget)
            if reason:
                refused.append(Refused(name, reason))
            else:
                seen.add((folder, file_name))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        refused.append(Refused(str(archive), f"unreadable archive, stopped here ({type(exc).__name__}: {exc})"))
    return refused


def write_archive(files: list[Path], root: Path, target: str | os.PathLike) -> Path:
    """Pack ``files`` (paths under ``root``, stored relative to it) into ``target`` (.tar,
    .tar.gz, .tgz or .zip), atomically: a temporary name beside it, then a rename."""
    target = Path(target)
    kind = archive_kind(target)
    if kind is None:
        raise UsageError(f"{target}: output archive must end in .tar, .tar.gz, .tgz or .zip")
    with atomic_path(target) as tmp:
        if kind == "zip":
            # PNGs are compressed already: store them; text members are deflated.
            with zipfile.ZipFile(tmp, "w") as out:
                for path in files:
                    method = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                    out.write(path, path.relative_to(root).as_posix(), compress_type=method)
        else:
            mode = "w:gz" if str(target).lower().endswith(("gz", ".tgz")) else "w"
            with tarfile.open(tmp, mode) as out:
                for path in files:
                    out.add(path, path.relative_to(root).as_posix(), recursive=False)
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
