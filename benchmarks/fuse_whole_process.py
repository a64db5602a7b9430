"""Whole-process fusion of the 25 TNO pairs: ``dwsfusion fuse`` against a naive plain-PyTorch
reference, in one run (rounds alternate, so both see the same machine).

The reference is what a user writes with the model and nothing else: one process that loads
the generator, reads each pair with OpenCV, runs the forward pass on plain PyTorch paths (no
channels-last convolutions, the general ``grid_sample`` dilation rather than the CPU slice path)
and writes the PNG. Both start a Python process and write the same kind of images; the ratio is
the reference's wall time over ``dwsfusion fuse``'s. Weights: the authors' release.
Run: python benchmarks/fuse_whole_process.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import SHARED, Stopwatch, write_result

DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))
REFERENCE = """
import sys
from pathlib import Path
import cv2, numpy as np, torch
from dwsfusion.checkpoints import load_generator
from dwsfusion.model import adaptive_conv, conv
conv.CPU_CHANNELS_LAST, adaptive_conv.MAX_SLICE_LEVELS = False, 0  # plain PyTorch paths
weights, tno, out = map(Path, sys.argv[1:])
generator = load_generator(weights).eval()
out.mkdir(parents=True, exist_ok=True)
for ir_path in sorted((tno / "ir").iterdir()):
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    vi = cv2.imread(str(tno / "vi" / ir_path.name), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    with torch.no_grad():
        fused = generator.fuse(torch.from_numpy(ir)[None, None], torch.from_numpy(vi)[None, None])[0]
    cv2.imwrite(str(out / f"{ir_path.stem}.png"), (fused[0, 0].numpy() * 255).astype(np.uint8))
"""


def seconds(command: list[str]) -> float:
    started = Stopwatch()
    subprocess.run(command, check=True, capture_output=True)
    return started.elapsed()


def main(rounds: int = 3) -> None:
    tno, weights = SHARED / "data" / "TNO", SHARED / "official" / "dwsfusion_official_generator.pth"
    if not (tno.is_dir() and weights.exists()):
        sys.exit(f"needs {tno} and {weights}")
    ours, reference = [], []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(rounds):
            fuse = [DWSFUSION, "fuse", "--checkpoint", str(weights), "--ir", str(tno / "ir"), "--vi", str(tno / "vi")]
            ours.append(seconds([*fuse, "--output", f"{folder}/ours{k}", "--quiet"]))
            naive = [sys.executable, "-c", REFERENCE, str(weights), str(tno), f"{folder}/reference{k}"]
            reference.append(seconds(naive))
    write_result(
        "fuse_whole_process",
        {
            "input": "25 TNO pairs, authors' release weights, folder to folder",
            "rounds": rounds,
            "dwsfusion_fuse_seconds": statistics.median(ours),
            "naive_reference_seconds": statistics.median(reference),
            "speedup": statistics.median(reference) / statistics.median(ours),
            "goal_speedup": 2.5,
        },
    )


if __name__ == "__main__":
    main()
