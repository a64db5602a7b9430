"""The fusion engines on this CPU: PyTorch and ONNX Runtime running ``dwsfusion export``'s file.

Per 640x480 pair (TNO 10.png; the forward pass alone, warm), the export's own cost, parity on the
25 TNO pairs (8-bit, as ``dwsfusion fuse`` writes), and whole-process ``dwsfusion fuse`` of the 25
TNO pairs with each engine (start-up included). Weights: the authors' release when ../shared has
it, else a seeded random init on generated scenes.
Run: python benchmarks/fuse_engines.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import SHARED, Stopwatch, timed, write_result

from dwsfusion.checkpoints import load_generator, save_generator
from dwsfusion.export import check_parity, export_onnx, sample_planes
from dwsfusion.fuse import fuse_luma, load_pair
from dwsfusion.model import Generator
from dwsfusion.onnx_engine import OnnxFuser
from dwsfusion.pairs import find_pairs

DWSFUSION = str(Path(sys.executable).with_name("dwsfusion"))


def whole_process(model: Path, tno: Path, out: Path) -> float:
    started = Stopwatch()
    command = [DWSFUSION, "fuse", "--checkpoint", str(model), "--ir", str(tno / "ir"), "--vi", str(tno / "vi")]
    subprocess.run([*command, "--output", str(out), "--quiet"], check=True)
    return started.elapsed()


def main() -> None:
    tno = SHARED / "data" / "TNO"
    weights = SHARED / "official" / "dwsfusion_official_generator.pth"
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if weights.exists() and tno.is_dir():
            checkpoint, label = weights, "authors' release, TNO"
            pairs, _ = find_pairs(tno / "ir", tno / "vi", strict=True)
            planes = [(s.ir, s.vis_y) for s in map(load_pair, pairs)]
            one = load_pair(next(p for p in pairs if p.stem == "10"))
            ir, vis = one.ir, one.vis_y
        else:
            torch.manual_seed(0)
            checkpoint, label = save_generator(Generator().eval(), folder / "random.pt"), "random init, generated"
            planes = sample_planes(4)
            ir, vis = planes[-1]
        assert ir.shape == (480, 640), ir.shape
        generator = load_generator(checkpoint)
        started = Stopwatch()
        onnx_file = export_onnx(generator, folder / "generator.onnx", {"source": label})
        export_seconds = started.elapsed()
        fuser = OnnxFuser(onnx_file)
        torch_times = timed(lambda: fuse_luma(generator, ir, vis), 20)
        onnx_times = timed(lambda: fuser(ir[None], vis[None]), 5, warmup=1)
        parity = check_parity(generator, fuser, planes, label)
        processes = {}
        if tno.is_dir():
            for engine, model in (("torch", checkpoint), ("onnxruntime", onnx_file)):
                processes[engine] = whole_process(model, tno, folder / engine)
    torch_median, onnx_median = statistics.median(torch_times), statistics.median(onnx_times)
    write_result(
        "fuse_engines",
        {
            "input": f"{label}; one pair 640x480",
            "export_seconds": export_seconds,
            "seconds_per_pair_median": {"torch": torch_median, "onnxruntime": onnx_median},
            "seconds_per_pair_min": {"torch": min(torch_times), "onnxruntime": min(onnx_times)},
            "parity": {
                "pairs": parity.pairs,
                "max_grey_levels": parity.max_grey_levels,
                "pixels_differing": parity.pixels_differing,
                "max_abs": parity.max_abs,
            },
            "whole_process_25_tno_seconds": processes,
            "default_engine": "torch" if torch_median <= onnx_median else "onnxruntime",
            "onnxruntime": __import__("onnxruntime").__version__,
            "numpy": np.__version__,
        },
    )


if __name__ == "__main__":
    main()
