"""A short real training run on CPU: TNO + RoadScene patches -> 2-worker Ray Train from
scratch -> fuse the 25 TNO pairs with the best generator -> metric table against
pixel-wise mean and max fusion. Not a test: it takes minutes. Results go to
benchmarks/results/train_on_shared.json.

Run: python examples/train_on_shared.py [--epochs 10 --steps 20]
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
from dwsfusion.evaluate import evaluate_folders  # noqa: E402
from dwsfusion.model import Generator  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402
from dwsfusion.quickstart import comparison_table, write_baselines  # noqa: E402
from dwsfusion.stream import fuse_pairs  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from pipelines.train import load_train_state, run_training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--evaluate-only", metavar="CHECKPOINT_DIR", help="skip prep and training: evaluate a finished run's checkpoint"
    )
    args = parser.parse_args()
    if not (SHARED / "data" / "TNO").is_dir():
        raise SystemExit(f"{SHARED}/data not found")
    work = Path(tempfile.mkdtemp(prefix="train-shared-"))
    if args.evaluate_only:
        evaluate(load_train_state(args.evaluate_only), work, {"checkpoint": args.evaluate_only})
        return
    started = time.perf_counter()
    link_shared_pairs(work / "src")
    prep = run_prep(
        PrepConfig(
            source=str(work / "src"),
            out=str(work / "patches"),
            patch_size=176,
            stride=88,
            val_fraction=0.1,
            seed=0,
        ),
        log=print,
    )
    config = TrainConfig(
        data=str(work / "patches"),
        storage_path=str(work / "storage"),
        name="shared",
        num_workers=2,
        epochs=args.epochs,
        max_steps_per_epoch=args.steps,
        batch_size=8,
        lr_g=args.lr,
        lr_d=args.lr,
        materialize=True,
        val_images=4,
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    result = run_training(config)
    about = {
        "data": f"TNO + RoadScene patches 176/88: {prep.counts}",
        "training": f"2 workers, {args.epochs} epochs x {args.steps} steps, global batch 8, lr {args.lr}, from scratch",
        "wall_seconds_prep_and_train": time.perf_counter() - started,
        "checkpoint": result.checkpoint,
    }
    evaluate(load_train_state(result.checkpoint), work, about)


def evaluate(state: dict, work: Path, about: dict) -> None:
    """Fuse TNO with the run's best generator; table beside mean/max fusion and the release."""
    generator = Generator()
    generator.load_state_dict(state["best"]["generator"])
    generator.eval()
    tno = SHARED / "data" / "TNO"
    pairs, _ = find_pairs(tno / "ir", tno / "vi")
    fuse_pairs(generator, pairs, work / "fused", progress=False)
    folders = {"trained": work / "fused", **write_baselines(pairs, work / "baselines")}
    release = SHARED / "official" / "tno_fused"
    if release.is_dir():  # the authors' own fused images, for scale
        folders["release"] = release
    results = {
        name: evaluate_folders(tno / "ir", tno / "vi", folder, progress=False) for name, folder in folders.items()
    }
    table = comparison_table(results)
    print(table)
    summary = {name: {k: v[0] for k, v in ev.summary().items()} for name, ev in results.items()}
    write_result(
        "train_on_shared",
        {
            **about,
            "best_epoch": state["best"]["epoch"],
            "tno_means": summary,
            "beats_mean_and_max_on_Qabf": summary["trained"]["Qabf"]
            > max(summary["mean"]["Qabf"], summary["max"]["Qabf"]),
            "beats_mean_and_max_on_VIF": summary["trained"]["VIF"] > max(summary["mean"]["VIF"], summary["max"]["VIF"]),
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
