"""Find IR/VIS pairs by file stem in an ``ir/`` + ``vi/`` folder or an MSRS-style tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .color import IMAGE_SUFFIXES
from .errors import UsageError

VIS_FOLDER_NAMES = ("vi", "vis", "visible")
IR_FOLDER_NAMES = ("ir", "infrared")


class PairError(UsageError):
    """Pairing failed: the message names the folder or file and the reason."""


@dataclass(frozen=True)
class ImagePair:
    stem: str
    ir: Path
    vi: Path


def images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise PairError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in found:
                raise PairError(f"{path}: stem '{path.stem}' also used by {found[path.stem].name}")
            found[path.stem] = path
    return found


def _find_child(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def resolve_source(root: str | Path, split: str = "test") -> tuple[Path, Path]:
    """A folder with ``ir/`` and ``vi/``, or an MSRS root (``<split>/ir``, ``<split>/vi``)."""
    root = Path(root)
    if not root.is_dir():
        raise PairError(f"{root}: not a folder")
    for base in (root, root / split):
        ir, vi = _find_child(base, IR_FOLDER_NAMES), _find_child(base, VIS_FOLDER_NAMES)
        if ir and vi:
            return ir, vi
    raise PairError(f"{root}: expected 'ir/' and 'vi/' subfolders (or MSRS '{split}/ir', '{split}/vi')")


@dataclass(frozen=True)
class Unpaired:
    """A file without a partner: the file and why (kept structured, never re-parsed)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def find_pairs(ir_dir: str | Path, vi_dir: str | Path, strict: bool = True) -> tuple[list[ImagePair], list[Unpaired]]:
    """Pair images by stem. Returns (pairs, unpaired files). With ``strict``, any unpaired file
    or an empty folder raises ``PairError``; otherwise the caller reports the unpaired files."""
    ir_dir, vi_dir = Path(ir_dir), Path(vi_dir)
    irs, vis = images_by_stem(ir_dir), images_by_stem(vi_dir)
    problems = [Unpaired(irs[s], f"no visible partner in {vi_dir}") for s in sorted(irs.keys() - vis.keys())]
    problems += [Unpaired(vis[s], f"no infrared partner in {ir_dir}") for s in sorted(vis.keys() - irs.keys())]
    pairs = [ImagePair(s, irs[s], vis[s]) for s in sorted(irs.keys() & vis.keys())]
    if strict and problems:
        raise PairError("; ".join(map(str, problems)))
    if strict and not pairs:
        raise PairError(f"{ir_dir} and {vi_dir}: no image pairs found")
    return pairs, problems
