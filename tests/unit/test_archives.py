"""Untrusted archives: every hostile member is refused with its reason, the rest extracted."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipelines.archives import ArchiveLimits, extract_pairs, member_target, write_archive


def _png(samples_dir: Path, folder: str, index: int = 0) -> bytes:
    return sorted((samples_dir / folder).glob("*.png"))[index].read_bytes()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "name,expected",
    [
        ("set/ir/a.png", ("ir", "a.png")),
        ("vi/a.PNG", ("vi", "a.PNG")),
        ("../ir/a.png", "path traversal"),
        ("set/../../ir/a.png", "path traversal"),
        ("/abs/ir/a.png", "path traversal"),
        ("C:/ir/a.png", "path traversal"),
        ("ir\\a.png", "path traversal"),
        ("readme.txt", "skipped"),
        ("other/a.png", "skipped"),
    ],
)
def test_member_names(name, expected):
    result = member_target(name)
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
    dest = tmp_path / "out"
    refused = extract_pairs(source, dest, ArchiveLimits(max_member_bytes=250_000))
    reasons = {r.member: r.reason for r in refused}
    assert "path traversal" in reasons["../ir/escape.png"]
    assert "path traversal" in reasons["/tmp/ir/absolute.png"]
    assert "link" in reasons["set/ir/link.png"] and "link" in reasons["set/vi/hard.png"]
    assert "per-member limit" in reasons["set/ir/big.png"]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "ir/good.png",
        "vi/good.png",
    ]
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
    dest = tmp_path / "out"
    refused = extract_pairs(source, dest, ArchiveLimits(max_member_bytes=1_000_000, max_pixels=10**9))
    reasons = {r.member: r.reason for r in refused}
    assert "path traversal" in reasons["../../vi/escape.png"]
    assert "link" in reasons["ir/link.png"]
    assert "per-member limit" in reasons["ir/bomb.png"]
    assert len(list((dest / "ir").glob("*.png"))) == 3 and len(list((dest / "vi").glob("*.png"))) == 3

    # Total size, member count and pixel count, each refused for the members beyond them.
    refused = extract_pairs(source, tmp_path / "few", ArchiveLimits(max_members=2))
    assert sum("member count limit" in r.reason for r in refused) == len(zipfile.ZipFile(source).infolist()) - 2
    refused = extract_pairs(source, tmp_path / "pixels", ArchiveLimits(max_pixels=1000))
    assert sum("pixels, above the limit" in r.reason for r in refused) == 6
    total = sum(len(_png(samples_dir, "ir", i)) for i in range(3)) + 10
    refused = extract_pairs(source, tmp_path / "total", ArchiveLimits(max_total_bytes=total))
    assert any("total uncompressed size" in r.reason for r in refused)


def test_written_archives_are_complete_or_absent(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "manifest.json").write_text("{}")
    files = [tmp_path / "a.png", tmp_path / "manifest.json"]
    for name in ("out.zip", "out.tar.gz", "out.tar"):
        target = write_archive(files, tmp_path, tmp_path / "packed" / name)
        assert target.is_file()
    assert zipfile.ZipFile(tmp_path / "packed" / "out.zip").namelist() == ["a.png", "manifest.json"]
    with pytest.raises(FileNotFoundError):
        write_archive([tmp_path / "missing.png"], tmp_path, tmp_path / "packed" / "broken.tar")
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["out.tar", "out.tar.gz", "out.zip"]
