"""Sharded batch fusion at archive scale: what the driver costs as the archive grows, and the
actors' throughput against a bare loop.

    python benchmarks/batch_fuse_scale.py [--sizes 2000 20000] [--shard-pairs 500] [--full-up-to 2000] [--cap-s 60]

1. **Scale.** Generated WebDataset shards of 640x480 pairs (16 distinct sample scenes, encoded
   once, repeated under new keys) fused by ``dwsfusion fuse --input DIR --output DIR
   --metrics none --actors 2`` as a user runs it, in a subprocess whose own peak RSS (VmHWM) and
   bytes written (``/proc/<pid>/io``) are read while it runs, and the first fused pair is seen
   as the first bytes in an output shard's temporary file. Archives up to ``--full-up-to`` pairs
   are fused whole; a larger one is stopped (Ctrl-C, as a user would) ``--cap-s`` seconds after
   its first shard finishes, so it takes minutes, not hours (the rerun that would finish it is
   not measured).
2. **Throughput.** ``--throughput-pairs`` pairs in 4 shards: 1 and 2 actors (1 CPU each) against
   a bare loop in this process (one torch thread: read the tar, decode, fuse, encode the PNG,
   write a tar), as the steady rate: pairs / (the run's seconds - seconds to its first pair).

Needs the release weights (../shared). Writes benchmarks/results/batch_fuse_scale.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, SHARED, Stopwatch, write_result

from dwsfusion.checkpoints import load_generator
from dwsfusion.color import encode_png, read_image_bytes
from dwsfusion.fuse import compose_output, fuse_luma, source_pair
from dwsfusion.samples import write_samples

WEIGHTS = SHARED / "official" / "dwsfusion_official_generator.pth"
DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))


def write_shards(folder: Path, pairs: int, per_shard: int, scenes: list[tuple[bytes, bytes]]) -> int:
    """``pairs`` pairs as WebDataset shards of ``per_shard``; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, pairs, per_shard):
        with tarfile.open(folder / f"night-{first // per_shard:05d}.tar", "w") as shard:
            for i in range(first, min(pairs, first + per_shard)):
                ir, vi = scenes[i % len(scenes)]
                for role, data in (("ir", ir), ("vi", vi)):
                    info = tarfile.TarInfo(f"p{i:06d}.{role}.png")
                    info.size = len(data)
                    shard.addfile(info, io.BytesIO(data))
    return sum(p.stat().st_size for p in folder.iterdir())


def _proc(pid: int) -> tuple[int, int]:
    """(peak RSS in bytes, bytes written) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    written = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/io").read_text().splitlines()
        if line.startswith("write_bytes:")
    )
    return peak, written


def _first_bytes(out: Path) -> bool:
    """An output shard has bytes: the first fused pair is written (its temporary file or a done shard)."""
    try:
        return any(p.name.endswith(".tar") or (".tar.tmp-" in p.name and p.stat().st_size) for p in out.iterdir())
    except OSError:  # the folder not there yet, or a temporary file renamed while listed
        return False


def fuse_run(src: Path, out: Path, actors: int, cap_s: float | None, batch_size: int) -> dict:
    """``dwsfusion fuse`` of ``src`` as a user runs it; the driver watched from outside."""
    cmd = [DWSFUSION, "fuse", "--checkpoint", str(WEIGHTS), "--input", str(src), "--output", str(out)]
    cmd += ["--metrics", "none", "--actors", str(actors), "--cpus-per-actor", "1", "--batch-size", str(batch_size)]
    cmd += ["--quiet"]
    started = Stopwatch()
    log = out.with_suffix(".log").open("w+")  # not a pipe: a full pipe would stall the driver
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ""})
    peak = written = 0
    first_pair = first_shard = None
    while process.poll() is None:
        try:
            peak, written = _proc(process.pid)
        except (OSError, StopIteration):
            pass
        now = started.elapsed()
        if first_pair is None and _first_bytes(out):
            first_pair = now
        if first_shard is None and out.is_dir() and any(p.suffix == ".tar" for p in out.iterdir()):
            first_shard = now
        if cap_s is not None and first_shard is not None and now > first_shard + cap_s:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
            break
        time.sleep(0.2)
    process.wait()
    log.seek(0)
    output = log.read()
    wall = started.elapsed()
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    done = sorted(p for p in out.iterdir() if p.suffix == ".tar")
    return {
        "finished": manifest.get("status") == "finished",
        "returncode": process.returncode,
        "wall_s": wall,
        "first_pair_written_s": first_pair,  # seen from outside, to 0.2 s
        "first_shard_done_s": first_shard,
        "first_pair_s": manifest.get("first_pair_s"),  # the driver's own count (to 1 s), when it finished
        "seconds": manifest.get("seconds"),
        "fused": manifest.get("counts", {}).get("fused"),
        "shards_done": len(done),
        "driver_peak_rss_mb": peak / 2**20,
        "driver_bytes_written_mb": written / 2**20,
        "output_tail": output[-400:] if process.returncode not in (0, 130) else "",
    }


def bare_loop(src: Path, out: Path) -> float:
    """Pairs/s of one process, one thread: the same work as an actor's, without Ray."""
    torch.set_num_threads(1)
    generator = load_generator(WEIGHTS)
    out.mkdir(parents=True, exist_ok=True)
    pairs = 0
    started = Stopwatch()
    for shard in sorted(src.glob("*.tar")):
        with tarfile.open(shard) as source, tarfile.open(out / shard.name, "w") as target:
            members = source.getmembers()
            for ir_info, vi_info in zip(members[::2], members[1::2], strict=True):
                ir = read_image_bytes(source.extractfile(ir_info).read(), ir_info.name)
                vi = read_image_bytes(source.extractfile(vi_info).read(), vi_info.name)
                pair = source_pair(ir_info.name, ir, vi, ir_info.name, vi_info.name)
                png = encode_png(compose_output(pair, fuse_luma(generator, pair.ir, pair.vis_y)))
                info = tarfile.TarInfo(ir_info.name.replace(".ir.png", ".fused.png"))
                info.size = len(png)
                target.addfile(info, io.BytesIO(png))
                pairs += 1
    return pairs / started.elapsed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[2000, 20000],
        help="archive sizes in pairs (none: keep the last file's)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per forward (on a CPU 1 is fastest)")
    parser.add_argument("--shard-pairs", type=int, default=500, help="pairs per shard")
    parser.add_argument("--full-up-to", type=int, default=2000, help="fuse archives up to this many pairs whole")
    parser.add_argument("--cap-s", type=float, default=60, help="stop a larger run this long after its first shard")
    parser.add_argument("--throughput-pairs", type=int, default=160, help="pairs of the throughput runs")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        raise SystemExit(f"{WEIGHTS} not found: this benchmark needs ../shared")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene_dir = write_samples(tmp / "scenes", count=16, seed=1, sizes=((480, 640),))
        scenes = [
            ((scene_dir / "ir" / p.name).read_bytes(), (scene_dir / "vi" / p.name).read_bytes())
            for p in sorted((scene_dir / "ir").glob("*.png"))
        ]
        scale = {}
        for size in args.sizes:
            src = tmp / f"in_{size}"
            data = write_shards(src, size, args.shard_pairs, scenes)
            cap = None if size <= args.full_up_to else args.cap_s
            run = fuse_run(src, tmp / f"out_{size}", actors=2, cap_s=cap, batch_size=args.batch_size)
            shards = -(-size // args.shard_pairs)
            scale[str(size)] = {
                "pairs": size,
                "shards": shards,
                "input_mb": data / 2**20,
                "batch_size": args.batch_size,
            }
            scale[str(size)].update(run)
            print(f"{size} pairs: {json.dumps(scale[str(size)])}", flush=True)
            for folder in (src, tmp / f"out_{size}"):
                subprocess.run(["rm", "-rf", str(folder)], check=True)

        src = tmp / "throughput"
        write_shards(src, args.throughput_pairs, -(-args.throughput_pairs // 4), scenes)
        bare = bare_loop(src, tmp / "bare")
        print(f"bare loop: {bare:.2f} pairs/s", flush=True)
        throughput = {}
        for actors in (1, 2):
            run = fuse_run(src, tmp / f"tp_{actors}", actors=actors, cap_s=None, batch_size=args.batch_size)
            steady = run["fused"] / (run["seconds"] - run["first_pair_s"])
            throughput[f"{actors}_actors"] = {**run, "steady_pairs_per_second": steady, "over_bare": steady / bare}
            print(f"{actors} actor(s): {steady:.2f} pairs/s = {steady / bare:.2f} x the bare loop", flush=True)
    two = throughput["2_actors"]["steady_pairs_per_second"]
    if not args.sizes:  # this run measured the throughput only: the scale part of the last file stays
        previous = json.loads((RESULTS / "batch_fuse_scale.json").read_text())
        scale, args.shard_pairs, args.full_up_to, args.cap_s = (
            previous["scale"],
            previous["shard_pairs"],
            previous["full_up_to"],
            previous["cap_s"],
        )
    write_result(
        "batch_fuse_scale",
        {
            "image": "640x480 PNG pairs (generated scenes), WebDataset shards",
            "shard_pairs": args.shard_pairs,
            "full_up_to": args.full_up_to,
            "cap_s": args.cap_s,
            "scale": scale,
            "throughput_pairs": args.throughput_pairs,
            "throughput_batch_size": args.batch_size,
            "bare_loop_pairs_per_second": bare,
            "throughput": throughput,
            "two_actors_over_twice_bare": two / (2 * bare),
            "goal": "first pair, driver RSS and writes flat in the archive size; 2 actors >= 0.9 x twice the bare loop",
        },
    )


if __name__ == "__main__":
    main()
