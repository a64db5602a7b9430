"""Untrusted archives: every hostile member is refused with its reason, the rest paired as they stream
past (both layouts), nothing written under a member's name; output archives complete or absent."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipelines.batch.archives import ArchiveLimits, member_role, pair_members, tar_members, write_archive, zip_members


def _png(samples_dir: Path, folder: str, index: int = 0) -> bytes:
    return sorted((samples_dir / folder).glob("*.png"))[index].read_bytes()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _pairs(source: Path, limits: ArchiveLimits, spill_bytes: int = 256 << 20):
    """(keys of the pairs, {member: reason} of the refused) of an archive."""
    refused = []
    members = zip_members(source) if source.suffix == ".zip" else tar_members(source)
    keys = [p.key for p in pair_members(members, limits, refused, spill_bytes)]
    return keys, {r.member: r.reason for r in refused}


@pytest.mark.parametrize(
    "name,expected",
    [
        ("set/ir/a.png", ("set/a", "ir")),
        ("vi/a.PNG", ("a", "vi")),
        ("night/0001.ir.png", ("night/0001", "ir")),
        ("0001.visible.jpg", ("0001", "vi")),
        ("../ir/a.png", "path traversal"),
        ("set/../../ir/a.png", "path traversal"),
        ("/abs/ir/a.png", "path traversal"),
        ("C:/ir/a.png", "path traversal"),
        ("ir\\a.png", "path traversal"),
        ("readme.txt", "skipped"),
        ("other/a.png", "skipped"),
        ("a.thermal.png", "skipped"),
        ("../x.ir.png", "path traversal"),
    ],
)
def test_member_names(name, expected):
    result = member_role(name)
    assert result == expected if isinstance(expected, tuple) else expected in result


def test_hostile_tar_members_are_refused_one_by_one(tmp_path, samples_dir):
    source = tmp_path / "hostile.tar.gz"
    with tarfile.open(source, "w:gz") as archive:
        _add(archive, "set/ir/good.png", _png(samples_dir, "ir"))
        _add(archive, "set/vi/good.png", _png(samples_dir, "vi"))
        _add(archive, "../ir/escape.png", _png(samples_dir, "ir"))
        _add(archive, "/tmp/ir/absolute.png", _png(samples_dir, "ir"))
        link = tarfile.TarInfo("set/ir/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        hard = tarfile.TarInfo("set/vi/hard.png")
        hard.type, hard.linkname = tarfile.LNKTYPE, "set/ir/good.png"
        archive.addfile(hard)
        _add(archive, "set/ir/big.png", _png(samples_dir, "ir", 1) + b"\0" * 300_000)
    keys, reasons = _pairs(source, ArchiveLimits(max_member_bytes=250_000))
    assert "path traversal" in reasons["../ir/escape.png"]
    assert "path traversal" in reasons["/tmp/ir/absolute.png"]
    assert "link" in reasons["set/ir/link.png"] and "link" in reasons["set/vi/hard.png"]
    assert "per-member limit" in reasons["set/ir/big.png"]
    assert keys == ["set/good"] and len(reasons) == 5
    assert not (tmp_path / "ir").exists() and not Path("/tmp/ir/absolute.png").exists()


def test_hostile_zip_members_and_limits(tmp_path, samples_dir):
    source = tmp_path / "hostile.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for i in range(3):
            archive.writestr(f"ir/p{i}.png", _png(samples_dir, "ir", i))
            archive.writestr(f"vi/p{i}.png", _png(samples_dir, "vi", i))
        archive.writestr("../../vi/escape.png", b"x")
        link = zipfile.ZipInfo("ir/link.png")
        link.external_attr = 0o120777 << 16  # a symlink, as `zip --symlinks` stores it
        archive.writestr(link, "/etc/passwd")
        archive.writestr("ir/bomb.png", b"\0" * 5_000_000)  # compresses to almost nothing
    keys, reasons = _pairs(source, ArchiveLimits(max_member_bytes=1_000_000, max_pixels=10**9))
    assert "path traversal" in reasons["../../vi/escape.png"]
    assert "link" in reasons["ir/link.png"]
    assert "per-member limit" in reasons["ir/bomb.png"]
    assert keys == ["p0", "p1", "p2"] and len(reasons) == 3

    # Total size, member count and pixel count, each refused for the members beyond them.
    keys, reasons = _pairs(source, ArchiveLimits(max_members=2))
    assert keys == ["p0"]
    assert sum("member count limit" in r for r in reasons.values()) == len(zipfile.ZipFile(source).infolist()) - 2
    keys, reasons = _pairs(source, ArchiveLimits(max_pixels=1000))
    assert keys == [] and sum("pixels, above the limit" in r for r in reasons.values()) == 6
    total = sum(len(_png(samples_dir, "ir", i)) for i in range(3)) + 10
    keys, reasons = _pairs(source, ArchiveLimits(max_total_bytes=total))
    assert any("total uncompressed size" in r for r in reasons.values())
    assert all("no visible partner" in reasons[f"ir/p{i}.png"] for i in range(3) if f"p{i}" not in keys)


@pytest.mark.parametrize("spill_bytes", [256 << 20, 0])
def test_both_layouts_pair_in_any_order_and_spill_when_large(tmp_path, samples_dir, spill_bytes):
    """ir/ + vi/ folders (every IR first) and WebDataset keys pair alike, the pairs' bytes
    intact, whether the waiting members stay in memory or spill to a temporary folder; what
    has no partner, or comes twice, is refused by name."""
    source = tmp_path / "mixed.tar"
    with tarfile.open(source, "w") as archive:
        for i in range(3):
            _add(archive, f"seq/ir/f{i}.png", _png(samples_dir, "ir", i))
        for i in (2, 1, 0):
            _add(archive, f"seq/vi/f{i}.png", _png(samples_dir, "vi", i))
        _add(archive, "k7.ir.png", _png(samples_dir, "ir", 0))
        _add(archive, "k7.vi.png", _png(samples_dir, "vi", 0))
        _add(archive, "k7.vi.jpg", _png(samples_dir, "vi", 1))
        _add(archive, "lonely.ir.png", _png(samples_dir, "ir", 1))
    refused = []
    pairs = list(pair_members(tar_members(source), ArchiveLimits(), refused, spill_bytes))
    assert [p.key for p in pairs] == ["seq/f2", "seq/f1", "seq/f0", "k7"]
    assert pairs[0].ir == _png(samples_dir, "ir", 2) and pairs[0].vi == _png(samples_dir, "vi", 2)
    assert (pairs[0].ir_member, pairs[0].vi_member) == ("seq/ir/f2.png", "seq/vi/f2.png")
    reasons = {r.member: r.reason for r in refused}
    assert reasons == {
        "k7.vi.jpg": "duplicate vi member for key k7",
        "lonely.ir.png": "no visible partner for key lonely in the archive",
    }


def test_a_truncated_archive_keeps_the_pairs_before_the_cut(tmp_path, samples_dir):
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as archive:
        for i in range(3):
            _add(archive, f"p{i}.ir.png", _png(samples_dir, "ir", i))
            _add(archive, f"p{i}.vi.png", _png(samples_dir, "vi", i))
    data = whole.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    keys, reasons = _pairs(cut, ArchiveLimits())
    assert keys[:1] == ["p0"] and len(keys) < 3
    assert any("unreadable archive" in r for r in reasons.values())


def test_written_archives_are_complete_or_absent(tmp_path):
    members = [("a.png", b"png"), ("manifest.json", b"{}")]
    for name in ("out.zip", "out.tar.gz", "out.tar"):
        target = write_archive(iter(members), tmp_path / "packed" / name)
        assert target.is_file()
    assert zipfile.ZipFile(tmp_path / "packed" / "out.zip").namelist() == ["a.png", "manifest.json"]
    with tarfile.open(tmp_path / "packed" / "out.tar.gz") as packed:
        assert packed.extractfile("a.png").read() == b"png"

    def broken():
        yield "a.png", b"png"
        raise OSError("the source went away")

    with pytest.raises(OSError):
        write_archive(broken(), tmp_path / "packed" / "broken.tar")
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["out.tar", "out.tar.gz", "out.zip"]
