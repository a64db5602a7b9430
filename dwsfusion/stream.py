"""Many pairs, one path: encoded IR/VIS in, fused PNG and scores out, for every form of fusion.

    pairs (files or archive members, as encoded bytes)
      -> decode            [threads, a batch ahead of the forward]
      -> fuse              [one forward per same-size batch; a large image in tiles]
      -> compose colour, score, encode PNG   [threads, a batch behind the forward]
      -> results, in the order the pairs came

``fuse_stream`` is that path; the folder form of ``dwsfusion fuse`` (``fuse_folder``), the
batch job's folder and shard forms (``pipelines.batch``) and the GPU check all run it and differ
only in where pairs come from and where results go. A pair that cannot be read, fused or
encoded comes out with its ``error`` (the file or member and the reason); the others go on.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .color import ImageError, check_header_pixels, encode_png, read_image_bytes
from .evaluate import score_images, to_gray_u8
from .files import atomic_write
from .fuse import Fuser, SourcePair, compose_output, fuse_sources, fuser_device, load_fuser, source_pair
from .pairs import ImagePair, find_pairs
from .tiling import TileConfig


@dataclass(frozen=True)
class EncodedPair:
    """One pair as it arrives: its key and both images, as bytes (an archive's members) or as
    files to read (``ir``/``vi`` None: the labels are the paths)."""

    key: str
    ir_label: str  # the file or member an error names
    vi_label: str
    ir: bytes | None = None
    vi: bytes | None = None


def file_pair(pair: ImagePair) -> EncodedPair:
    return EncodedPair(pair.stem, str(pair.ir), str(pair.vi))


@dataclass
class FusedPair:
    """One pair's result: the PNG and its scores, or the error that stopped it."""

    key: str
    png: bytes | None = None
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # decode + its share of the forward + compose, score and encode
    error: str | None = None


@dataclass(frozen=True)
class StreamOptions:
    """What decides a stream's images and rows, and how it runs (the batch job passes its
    settings' fields; the folder form its defaults)."""

    metrics: tuple[str, ...] = ()
    rounding: str = "truncate"
    tiles: TileConfig | None = TileConfig()
    precision: str = "fp32"
    batch_size: int = 1  # pairs per forward (those of one size share it)
    threads: int = 1  # decode / encode / metric threads beside the forward
    max_pixels: int | None = None  # files: refused from their header beyond this (archives check their own)


def _read(label: str, data: bytes | None, max_pixels: int | None) -> bytes:
    if data is not None:
        return data
    path = Path(label)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if max_pixels is not None:
        check_header_pixels(path, max_pixels)
    return path.read_bytes()


@dataclass
class _Decoded:
    pair: EncodedPair
    source: SourcePair
    grays: tuple[np.ndarray, np.ndarray] | None  # the sources' 8-bit luma, when scored
    seconds: float


def _decode(pair: EncodedPair, options: StreamOptions) -> _Decoded:
    started = time.perf_counter()
    ir = read_image_bytes(_read(pair.ir_label, pair.ir, options.max_pixels), pair.ir_label)
    vi = read_image_bytes(_read(pair.vi_label, pair.vi, options.max_pixels), pair.vi_label)
    source = source_pair(pair.key, ir, vi, pair.ir_label, pair.vi_label)
    grays = (to_gray_u8(*ir), to_gray_u8(*vi)) if options.metrics else None
    return _Decoded(pair, source, grays, time.perf_counter() - started)


def _finish(decoded: _Decoded, luma: np.ndarray, options: StreamOptions, device: str, forward_s: float) -> FusedPair:
    started = time.perf_counter()
    try:
        image = compose_output(decoded.source, luma, options.rounding)
        scores = score_images(*decoded.grays, image, options.metrics, device) if decoded.grays else {}
        png = encode_png(image, decoded.pair.key)
    except (ImageError, OSError) as exc:
        return FusedPair(decoded.pair.key, error=str(exc))
    return FusedPair(decoded.pair.key, png, scores, decoded.seconds + forward_s + time.perf_counter() - started)


def _failed(pair: EncodedPair, exc: BaseException) -> Future:
    done: Future = Future()
    done.set_result(FusedPair(pair.key, error=str(exc)))
    return done


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fuse_stream(
    fuser: Fuser, pairs: Iterable[EncodedPair], options: StreamOptions = StreamOptions()
) -> Iterator[FusedPair]:
    """Every pair of ``pairs`` decoded, fused and encoded (see the module docstring), yielded
    in order as each is done. The next batch decodes and the last one encodes on
    ``options.threads`` threads while a batch is fused; ``pairs`` is read lazily, a batch ahead."""
    device = fuser_device(fuser)
    with ThreadPoolExecutor(max(1, options.threads), thread_name_prefix="fuse-io") as pool:
        decoding: deque[list[tuple[EncodedPair, Future]]] = deque()
        finishing: deque[Future] = deque()

        def fuse_oldest() -> None:
            outcomes: list[_Decoded | Future] = []  # in the pairs' order: decoded, or failed already
            for pair, future in decoding.popleft():
                try:
                    outcomes.append(future.result())
                except (ImageError, OSError) as exc:
                    outcomes.append(_failed(pair, exc))
            decoded = [o for o in outcomes if isinstance(o, _Decoded)]
            started = time.perf_counter()
            fused = iter(fuse_sources(fuser, [d.source for d in decoded], options.tiles, options.precision))
            share = (time.perf_counter() - started) / max(1, len(decoded))
            for outcome in outcomes:
                if isinstance(outcome, _Decoded):
                    outcome = pool.submit(_finish, outcome, next(fused), options, device, share)
                finishing.append(outcome)

        def done(keep: int) -> Iterator[FusedPair]:
            while len(finishing) > keep:
                yield finishing.popleft().result()

        try:
            for batch in _batches(pairs, options.batch_size):
                decoding.append([(pair, pool.submit(_decode, pair, options)) for pair in batch])
                if len(decoding) > 1:  # the next batch decodes while this one is fused
                    fuse_oldest()
                    yield from done(keep=2 * options.batch_size)  # encoding runs a batch behind
            while decoding:
                fuse_oldest()
            yield from done(keep=0)
        finally:
            for future in finishing:
                future.cancel()


# ------------------------------------------------------------------ files in, files out
@dataclass
class FuseReport:
    written: list[Path]
    failed: list[str]  # "<file>: <reason>"


def fuse_pairs(
    fuser: Fuser,
    pairs: Iterable[ImagePair],
    out_dir: str | os.PathLike,
    options: StreamOptions = StreamOptions(),
    progress: bool = True,
) -> FuseReport:
    """Fuse every pair into ``out_dir/<stem>.png``. A bad pair is reported and skipped; each
    output is written atomically, so an interrupted run leaves only complete images."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(pairs)
    report = FuseReport([], [])
    results = fuse_stream(fuser, map(file_pair, pairs), options)
    for result in tqdm(results, total=len(pairs), desc="fuse", unit="pair", disable=not progress):
        if result.error is not None:
            report.failed.append(result.error)
            continue
        report.written.append(atomic_write(out_dir / f"{result.key}.png", result.png))
    return report


def fuse_folder(
    checkpoint: str | os.PathLike,
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: StreamOptions = StreamOptions(),
    *,
    device: str = "cpu",
    engine: str = "auto",
    progress: bool = True,
) -> FuseReport:
    """The folder form of ``dwsfusion fuse``: checkpoint (or exported .onnx) + folders -> fused
    PNGs named by stem."""
    pairs, _ = find_pairs(ir_dir, vi_dir, strict=True)
    fuser = load_fuser(checkpoint, engine, device)
    return fuse_pairs(fuser, pairs, out_dir, options, progress)


def fuse_and_score(
    fuser: Fuser, pairs: list[ImagePair], out_dir: str | os.PathLike, options: StreamOptions = StreamOptions()
) -> list[dict]:
    """``pairs`` fused into ``out_dir/<stem>.png`` and scored with ``options.metrics`` (on the
    fuser's device when that is a GPU). Returns one row per pair, in order: ``name``, the
    metrics and ``seconds``, or ``name`` and ``error`` (the file and the reason)."""
    results = fuse_stream(fuser, map(file_pair, pairs), options)
    return [result_row(write_png(result, out_dir), "name") for result in results]


def write_png(result: FusedPair, out_dir: str | os.PathLike) -> FusedPair:
    """``result``'s PNG written atomically as ``out_dir/<key>.png``; a write that fails becomes
    the pair's error (the other pairs go on)."""
    if result.error is None:
        try:
            atomic_write(Path(out_dir) / f"{result.key}.png", result.png)
        except OSError as exc:
            return FusedPair(result.key, error=str(exc))
    return result


def result_row(result: FusedPair, key_column: str) -> dict:
    """A result as a metrics row: the key, then the scores and seconds, or the error."""
    if result.error is not None:
        return {key_column: result.key, "error": result.error}
    return {key_column: result.key, **result.scores, "seconds": result.seconds}
