"""The bare ``train_step``: this tree against a baseline commit, on the same batches.

Each tree runs this script with ``--measure`` in a subprocess of its own (its code first on
PYTHONPATH), on the same patches saved once: seeded networks, lr 0.01, the release's losses.
It reports seconds per step (median of the timed steps after two warm-up steps), and the loss
terms and gradients of the first batch at the seeded initial weights, so the speed-up is shown
to leave the results unchanged (float noise only; a GAN's later steps amplify such noise).
The trees alternate (baseline, this, baseline, this) so drift of this shared machine hits both.
Shapes: batch 16 at 240x240 (the release recipe's batch, the nearest square to its 240x320
crops) and batch 8 at 176x176.
Baseline: a git worktree of ``--baseline`` (default: the last commit before the speed-up).
Patches: random crops of ../shared RoadScene + TNO when present, else generated scenes.
Run: python benchmarks/train_step_speed.py [--baseline REV] [--steps 10 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BASELINE = "14ebec0"  # main before the step speed-up (channels-last convolutions, tap sampling, MS-SSIM)
SHAPES = ((16, 240), (8, 176))


def measure(batches: np.ndarray, steps: int) -> dict:
    """Run in the tree under test: seconds per step, and the first batch's losses and
    gradients at the seeded initial weights (what "unchanged results" compares)."""
    import torch
    from common import Stopwatch  # this script's folder: first on sys.path when run as a script

    import dwsfusion
    from dwsfusion.losses import LossWeights, critic_losses, generator_losses
    from dwsfusion.step import build_networks, build_optimizers, train_step

    images = torch.from_numpy(batches).float().div(255)  # (N, 2, B, P, P)
    ir, vi = images[0, 0, :, None], images[0, 1, :, None]
    torch.manual_seed(0)
    nets = build_networks()
    out = nets.generator(ir, vi)
    critic = critic_losses(nets.d_ir, ir, out.fused.detach(), LossWeights().gradient_penalty)
    critic["loss"].backward()
    generator = generator_losses(out, ir, vi, nets.d_ir, nets.d_vi, LossWeights())
    generator["total"].backward()
    losses = {f"d_ir_{k}": v.item() for k, v in critic.items()} | {f"g_{k}": v.item() for k, v in generator.items()}
    gradients = {
        name: torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]).tolist()
        for name, net in (("generator", nets.generator), ("d_ir", nets.d_ir))
    }

    torch.manual_seed(0)
    nets = build_networks()
    opts = build_optimizers(nets, 0.01, 0.01)
    times = []
    for i in range(steps + 2):
        ir, vi = images[i % len(images), 0, :, None], images[i % len(images), 1, :, None]
        start = Stopwatch()
        train_step(nets, opts, ir, vi, LossWeights())
        if i >= 2:  # after two warm-up steps
            times.append(start.elapsed())
    return {
        "code": str(Path(dwsfusion.__file__).parent),
        "step_times": times,
        "losses": losses,
        "gradients": gradients,
    }


def _batches(count: int, batch: int, patch: int) -> np.ndarray:
    """(count, 2, batch, patch, patch) uint8 IR/VIS crops."""
    sys.path.insert(0, str(Path(__file__).parent))
    from common import SHARED

    from dwsfusion.color import read_luma_u8
    from dwsfusion.samples import make_scene

    rng = np.random.default_rng(0)
    sources = []
    for dataset in ("RoadScene", "TNO"):
        folder = SHARED / "data" / dataset
        for ir in sorted((folder / "ir").glob("*")) if folder.is_dir() else []:
            pair = read_luma_u8(ir), read_luma_u8(folder / "vi" / ir.name)
            if min(pair[0].shape) >= patch:
                sources.append(pair)
    if not sources:  # no ../shared: generated scenes
        for _ in range(8):
            ir, vi = make_scene(rng, 2 * patch, 2 * patch)
            sources.append((ir, vi.mean(-1).astype(np.uint8)))
    out = np.empty((count, 2, batch, patch, patch), np.uint8)
    for n in range(count):
        for b in range(batch):
            ir, vi = sources[rng.integers(len(sources))]
            y, x = rng.integers(0, ir.shape[0] - patch + 1), rng.integers(0, ir.shape[1] - patch + 1)
            out[n, 0, b], out[n, 1, b] = ir[y : y + patch, x : x + patch], vi[y : y + patch, x : x + patch]
    return out


def _run(tree: Path, data: Path, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--measure", str(data), "--steps", str(steps)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["code"].startswith(str(tree)):
        raise RuntimeError(f"measured {result['code']}, not the tree {tree}")
    return result


def _unchanged(current: dict, baseline: dict) -> dict:
    """Largest relative difference of the first batch's loss terms and of each network's
    gradient (L2 norm of the difference over the norm), same weights, same batch."""
    losses = max(abs(current["losses"][k] - v) / max(abs(v), 1e-6) for k, v in baseline["losses"].items())
    figures = {"max_relative_loss_difference": losses}
    for name, reference in baseline["gradients"].items():
        a, b = np.asarray(current["gradients"][name]), np.asarray(reference)
        figures[f"relative_gradient_difference_{name}"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=BASELINE)
    # 30 timed steps per tree and shape: this shared box drifts by about 10 % within minutes
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (after 2 warm-up steps)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per tree")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the subprocess
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(np.load(args.measure), args.steps)))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from common import REPO, write_result

    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(baseline), args.baseline])
        try:
            for batch, patch in SHAPES:
                data = Path(tmp) / f"batches_{batch}_{patch}.npy"
                np.save(data, _batches(4, batch, patch))
                runs = {"baseline": [], "current": []}
                for _ in range(args.rounds):
                    runs["baseline"].append(_run(baseline, data, args.steps))
                    runs["current"].append(_run(REPO, data, args.steps))
                seconds = {k: statistics.median(t for r in v for t in r["step_times"]) for k, v in runs.items()}
                figures[f"batch{batch}_{patch}"] = {
                    "seconds_per_step_baseline": seconds["baseline"],
                    "seconds_per_step_current": seconds["current"],
                    "speedup": seconds["baseline"] / seconds["current"],
                    "samples_per_second_current": batch / seconds["current"],
                    **_unchanged(runs["current"][0], runs["baseline"][0]),
                }
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    write_result(
        "train_step_speed",
        {
            "baseline": args.baseline,
            "timed_steps_per_run": args.steps,
            "rounds": args.rounds,
            "results": figures,
            "goal_speedup": 2.0,
        },
    )


if __name__ == "__main__":
    main()
