"""A real small sweep on CPU: TNO + RoadScene patches -> a Ray Tune sweep of the three
dual-weight coefficients (the release defaults 1, 1, 1 as the first trial, then random
log-uniform points in [0.1, 10]) with ASHA -> the table of trials and whether the best beats
the defaults on the validation objective. Not a test: it takes minutes.
Results: benchmarks/results/sweep_on_shared.json (+ the MLflow parent run).

Run: python examples/sweep_on_shared.py [--samples 6 --epochs 3 --steps 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import SHARED, link_shared_pairs, write_result  # noqa: E402

from data_prep import PrepConfig, run_prep  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from tune import SweepConfig, run_sweep  # noqa: E402

COEFFICIENTS = ("loss.dual_ir", "loss.dual_vi", "loss.dual_cross")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=6, help="trials, the defaults included")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="steps per epoch")
    args = parser.parse_args()
    if not (SHARED / "data" / "TNO").is_dir():
        raise SystemExit(f"{SHARED}/data not found")
    work = Path(tempfile.mkdtemp(prefix="sweep-shared-"))
    started = time.perf_counter()
    link_shared_pairs(work / "src")
    prep = run_prep(
        PrepConfig(source=str(work / "src"), out=str(work / "patches"), patch_size=176, stride=88, val_fraction=0.1),
        log=print,
    )
    train = TrainConfig(
        data=str(work / "patches"),
        num_workers=1,
        epochs=args.epochs,
        max_steps_per_epoch=args.steps,
        batch_size=4,
        lr_g=2e-3,
        lr_d=2e-3,
        materialize=True,
        shuffle_buffer=0,
        val_images=24,
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    config = SweepConfig(
        train=train,
        name="shared",
        storage_path=str(work / "tune"),
        num_samples=args.samples,
        points_to_evaluate=[dict.fromkeys(COEFFICIENTS, 1.0)],
    )
    result = run_sweep(config)
    defaults = next(r for r in result.table if all(r[k] == 1.0 for k in COEFFICIENTS))
    for row in result.table:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "checkpoint"})
    verdict = result.best_score > defaults["best_val_score"]
    print(
        f"best {result.best_score:.4f} {result.best_params}; defaults {defaults['best_val_score']:.4f}: "
        f"{'beats' if verdict else 'does not beat'} the defaults"
    )
    write_result(
        "sweep_on_shared",
        {
            "data": f"TNO + RoadScene patches 176/88: {prep.counts}",
            "sweep": f"{args.samples} trials (defaults first), 1 worker, {args.epochs} epochs x {args.steps} steps, "
            f"batch 4, lr 2e-3, ASHA grace 1 rf 2; objective val_score = mean(Qabf, VIF, SSIM) on 24 val patches",
            "wall_seconds": time.perf_counter() - started,
            "trials": [{k: v for k, v in row.items() if k != "checkpoint"} for row in result.table],
            "best_params": result.best_params,
            "best_val_score": result.best_score,
            "defaults_val_score": defaults["best_val_score"],
            "best_beats_defaults": verdict,
        },
    )


if __name__ == "__main__":
    main()
