"""Train DWSFusion from scratch with the release's recipe through the pipeline's own commands,
then score it on TNO beside the authors' release and pixel-wise mean and max fusion.

1. ``dwsfusion prep`` on ../shared/data/RoadScene (or ``--source``: an MSRS root), resized by 0.6
   (the release trained on MSRS at half size) into 176x176 patches on a dense grid (stride 8,
   standing in for random crops); 10 % of the images held out for validation. TNO is never
   seen in training.
2. ``dwsfusion train --config configs/reproduce.yaml`` (Ray Train, one worker, the release's
   generator optimiser, learning rate, batch, plateau schedule and early stopping, adversarial
   weight 0 as docs/fidelity.md explains; learning curves and fusion grids in MLflow).
3. The best generator fuses the 25 TNO pairs; our metric suite scores it, the release's own
   fused images, and mean and max fusion of the same pairs.

Writes ``benchmarks/results/reproduce_tno.json`` (``tno_means`` -> trained / release / mean /
max, ``train_source``, ``prep``, ``steps``, ``wall_s``) and prints the table. Not a test: about
75 minutes on a 2-core CPU. ``--patch-size 240 --stride 24 --scale 1`` is the earlier recipe.

Run: python examples/reproduce.py [--work DIR] [key=value ...]   (overrides of the training config)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import SHARED, write_result  # noqa: E402

from data_prep import load_manifest  # noqa: E402
from dwsfusion.evaluate import evaluate_folders  # noqa: E402
from dwsfusion.model import Generator, GeneratorConfig  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402
from dwsfusion.quickstart import comparison_table, write_baselines  # noqa: E402
from dwsfusion.stream import fuse_pairs  # noqa: E402
from pipelines.train import load_train_state  # noqa: E402

PATCH, STRIDE, SCALE = 176, 8, 0.6  # docs/fidelity.md: the release trained on half-size MSRS
HEADLINE = ("Qabf", "VIF", "SSIM")  # the bar: each at least 0.95 x the release's


def _dwsfusion(*args: str) -> str:
    """Run a pipeline command as a user would; its output streams through, and is returned."""
    command = [str(Path(sys.executable).with_name("dwsfusion")), *args]
    print("$ dwsfusion " + " ".join(args), flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait():
        raise SystemExit(f"dwsfusion {args[0]} failed with status {process.returncode}")
    return "".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--source", type=Path, help="training pairs: an MSRS root or ir/ + vi/ (default: ../shared/data/RoadScene)"
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "reproduce", help="prep, training, fused images")
    parser.add_argument("--patch-size", type=int, default=PATCH, help="training patch side (prep)")
    parser.add_argument("--stride", type=int, default=STRIDE, help="patch grid step (prep)")
    parser.add_argument("--scale", type=float, default=SCALE, help="resize the training pairs first (prep)")
    parser.add_argument(
        "--fit-patch", action="store_true", help="shrink the pairs --scale would make too small only to the patch"
    )
    parser.add_argument("--tag", help="write benchmarks/results/reproduce_tno_<tag>.json instead")
    parser.add_argument("overrides", nargs="*", help="key=value for configs/reproduce.yaml (e.g. epochs=2)")
    return parser


def main() -> None:
    args = _parser().parse_args()
    source, tno = args.source or SHARED / "data" / "RoadScene", SHARED / "data" / "TNO"
    if not source.is_dir():
        raise SystemExit(f"{source}: no such folder of training pairs (--source)")
    if not (tno / "ir").is_dir():
        raise SystemExit(f"{tno}: the TNO pairs (ir/, vi/) are needed to score the run")
    work = args.work.resolve()
    started = time.perf_counter()

    patches = work / "patches"
    prep = ["--patch-size", str(args.patch_size), "--stride", str(args.stride), "--scale", str(args.scale)]
    prep += ["--val-fraction", "0.1", "--quiet"] + (["--fit-patch"] if args.fit_patch else [])
    _dwsfusion("prep", "--source", str(source), "--out", str(patches), *prep)
    run = [f"data={patches}", f"storage_path={work / 'train'}", f"mlflow_tracking_uri=sqlite:///{work / 'mlflow.db'}"]
    resume = ["--resume"] if (work / "train" / "reproduce").exists() else []
    out = _dwsfusion("train", "--config", str(REPO / "configs" / "reproduce.yaml"), *run, *args.overrides, *resume)
    checkpoint = re.search(r"last checkpoint: (\S+)", out).group(1)
    train_seconds = time.perf_counter() - started

    counts = load_manifest(str(patches))["counts"]
    state = load_train_state(checkpoint)
    generator = Generator(GeneratorConfig(**state["generator_config"]))
    generator.load_state_dict(state["best"]["generator"])
    pairs, _ = find_pairs(tno / "ir", tno / "vi")
    fuse_pairs(generator.eval(), pairs, work / "tno_fused", progress=False)
    folders = {"trained": work / "tno_fused", "release": SHARED / "official" / "tno_fused"}
    folders.update(write_baselines(pairs, work / "baselines"))
    results = {
        name: evaluate_folders(tno / "ir", tno / "vi", folder, progress=False) for name, folder in folders.items()
    }
    table = comparison_table(results)
    means = {name: {k: v[0] for k, v in ev.summary().items()} for name, ev in results.items()}
    ratios = {k: means["trained"][k] / means["release"][k] for k in HEADLINE}
    print(f"\nTNO, 25 pairs (trained: best of {len(state['history'])} epochs, epoch {state['best']['epoch']})")
    print(table)
    print("trained / release: " + "  ".join(f"{k} {r:.3f}" for k, r in ratios.items()))
    resized = f"resized by {args.scale:g}, " if args.scale != 1.0 else ""
    resized += "those it would make smaller than a patch only to the patch's side, " if args.fit_patch else ""
    grid = f"{args.patch_size}x{args.patch_size} patches, stride {args.stride}"
    write_result(
        "reproduce_tno" + (f"_{args.tag}" if args.tag else ""),
        {
            "train_source": f"{source} ({counts['train']['pairs']} training pairs, {counts['val']['pairs']} "
            f"for val; {resized}{grid})",
            "prep": {
                "patch_size": args.patch_size,
                "stride": args.stride,
                "scale": args.scale,
                "fit_patch": args.fit_patch,
                "val_fraction": 0.1,
            },
            "test_source": f"{tno} (25 pairs, never trained on)",
            "config": "configs/reproduce.yaml" + (f" with {' '.join(args.overrides)}" if args.overrides else ""),
            "steps": int(sum(h.get("train_steps", 0) for h in state["history"])),
            "epochs": len(state["history"]),
            "best_epoch": state["best"]["epoch"],
            "learning_rates": sorted({h["lr_g"] for h in state["history"]}, reverse=True),
            "wall_s": time.perf_counter() - started,
            "train_wall_s": train_seconds,
            "tno_means": means,
            "trained_over_release": ratios,
            "goal": "each of Qabf, VIF, SSIM >= 0.95 x the release's",
            "met": all(r >= 0.95 for r in ratios.values()),
            "table": table,
            "checkpoint": checkpoint,
            "machine_threads": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    main()
