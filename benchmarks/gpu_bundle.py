"""Build the Ray + MLflow bundle the GPU machine lacks, so `bash benchmarks/gpu_check.sh` can
run the Ray-on-GPU layer there.

The machine has Python 3.12 with torch (CUDA), NumPy, OpenCV, pyarrow, pandas and pytest, but no
Ray, MLflow or pydantic, and reaches no package index; what travels with the working tree is
capped at 64 MiB. So this script, on a machine that reaches an index:

1. takes the versions installed here (what CI tests: ray, mlflow-skinny, pydantic, ...) and the
   closure of their requirements for the target Python, without what the GPU machine has;
2. downloads exactly those versions as wheels for the target (``pip download --no-deps``);
3. installs them into one folder (``pip install --target``, for the target platform), leaves out
   what no test or benchmark imports (``ray/jars``, ``rllib``, ``serve``, ``llm``, the
   dashboard's ``*.js.map``, console scripts, bytecode, NOT_NEEDED), strips the binaries' symbol
   tables, and
4. packs it as ``<out>/site.tar.xz`` with ``<out>/bundle.json``, the versions and sizes (the
   wheels stay in ``<out>/wheels`` for the next build).

``gpu_check.sh`` unpacks it into /tmp/gpu-check-site and puts it on PYTHONPATH when Ray does not
import. Carry the archive alone: ``carry: [".gpu_bundle/site.tar.xz"]`` (git-ignored).

Run: python benchmarks/gpu_bundle.py [--python 3.12] [--out .gpu_bundle]
Check it: PYTHONPATH=/tmp/site:. python3.12 benchmarks/gpu_bundle.py --check   (a clean Python with
the GPU machine's packages; the site unpacked from the archive)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# What the project needs (pyproject.toml's dependencies), with MLflow as mlflow-skinny +
# SQLAlchemy + Alembic: the tracking client, the model registry and the SQLite store, without the
# UI's server and its dependencies.
MLFLOW_AS = ("mlflow-skinny", "sqlalchemy", "alembic")
# On the GPU machine already (and torch's own dependencies): never downloaded, never shadowed.
PRESENT = {
    canonicalize_name(n)
    for n in (
        "torch triton sympy mpmath networkx numpy pandas pyarrow opencv-python opencv-python-headless "
        "pytest pluggy iniconfig setuptools pip wheel"
    ).split()
}
LEFT_OUT = ("ray/jars", "ray/rllib", "ray/serve", "ray/llm", "bin")  # nothing here imports them
# Required by a package but imported only on paths we never take: Ray's virtualenv (pip runtime
# environments) and py-spy (its profiler binary). (matplotlib's fontTools looks like one, but
# pyplot imports it.)
NOT_NEEDED = {"virtualenv", "distlib", "python-discovery", "py-spy"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "any")


def closure(roots: tuple[str, ...], python: str) -> dict[str, str]:
    """Name -> installed version of ``roots`` and everything they require on ``python``
    (Linux, x86-64), as installed in this environment, less PRESENT and NVIDIA's packages."""
    environment = default_environment() | {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    pinned: dict[str, str] = {}
    done: set[tuple[str, str]] = set()  # (package, extra) whose requirements are followed; "" the base
    todo = [Requirement(r) for r in roots]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in PRESENT or name in NOT_NEEDED or name.startswith("nvidia-"):
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{requirement.name} is required but not installed here: install the project") from None
        pinned[name] = dist.version
        for extra in {"", *requirement.extras} - {e for n, e in done if n == name}:
            done.add((name, extra))
            for line in dist.requires or []:
                child = Requirement(line)
                if child.marker is None or child.marker.evaluate(environment | {"extra": extra}):
                    todo.append(child)
    return dict(sorted(pinned.items()))


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _target(python: str) -> list[str]:
    platforms = [w for p in PLATFORMS for w in ("--platform", p)]
    abi = "cp" + python.replace(".", "")
    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi, *platforms]


def roots() -> tuple[str, ...]:
    """pyproject.toml's dependencies, MLflow as MLFLOW_AS."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    named = [Requirement(d) for d in dependencies]
    keep = [str(r) for r in named if canonicalize_name(r.name) != "mlflow"]
    return (*keep, *MLFLOW_AS)


def _wheel_name(wheel: Path) -> str:
    return canonicalize_name(wheel.name.split("-")[0])


def strip_binaries(site: Path) -> int:
    """``strip --strip-unneeded`` every ELF file (Ray ships its binaries with their symbol
    tables: a quarter of their size; the dynamic symbols stay, so they load and link as before,
    only a C++ crash's stack trace loses its names). Returns the bytes saved; 0 without strip."""
    if shutil.which("strip") is None:
        return 0
    saved = 0
    for path in site.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
            before = path.stat().st_size
            subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
            saved += before - path.stat().st_size
    return saved


def trim(site: Path) -> int:
    """Remove what nothing imports; returns the bytes removed."""
    removed = 0
    doomed = [site / p for p in LEFT_OUT] + list(site.rglob("*.js.map")) + list(site.rglob("__pycache__"))
    for path in doomed:
        if not path.exists():
            continue
        if path.is_dir():
            removed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        else:
            removed += path.stat().st_size
            path.unlink()
    return removed


def check(root: Path) -> dict:
    """With the bundle on PYTHONPATH, in the GPU machine's kind of Python: import what the
    bundle carries and run the Ray layer's paths once on the CPU, as the gpu tests run them on
    the GPU: prep (Ray Data), one training (Ray Train, MLflow in SQLite), a two-trial sweep
    (Ray Tune) and batch fusion on an actor. Returns what ran, with seconds."""
    import mlflow
    import ray
    import torch

    from data_prep import PrepConfig, run_prep
    from dwsfusion.samples import write_samples
    from pipelines.batch.run import FuseJob, batch_fuse
    from pipelines.config import TrainConfig
    from pipelines.train import run_training
    from tune import SweepConfig, run_sweep

    timings, started = {}, time.perf_counter()
    ray.init(address="local", num_cpus=4, logging_level="ERROR")
    try:
        write_samples(root / "src", count=5, seed=3)
        prep = PrepConfig(
            source=str(root / "src"), out=str(root / "patches"), patch_size=176, stride=48, val_fraction=0.4
        )
        run_prep(prep, log=lambda *_: None)
        timings["prep"] = time.perf_counter() - started
        train = TrainConfig(
            data=str(root / "patches"),
            storage_path=str(root / "storage"),
            name="check",
            num_workers=1,
            epochs=1,
            batch_size=4,
            max_steps_per_epoch=2,
            materialize=True,
            mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        )
        trained = run_training(train, progress=False)
        timings["train"] = time.perf_counter() - started
        base = train.model_copy(update={"name": "base"})
        sweep = SweepConfig(train=base, name="sweep", storage_path=str(root / "tune"), num_samples=2, max_concurrent=2)
        swept = run_sweep(sweep.model_copy(update={"scheduler": "fifo"}), progress=False)
        timings["tune"] = time.perf_counter() - started
        job = FuseJob(
            input=str(root / "src"), checkpoint=trained.checkpoint, output=str(root / "fused"), metrics=("Qabf",)
        )
        fused = batch_fuse(job.model_copy(update={"actors": 1}), progress=False)
        timings["fuse"] = time.perf_counter() - started
    finally:
        ray.shutdown()
    if len(swept.table) != 2 or fused.failures or fused.fused != 5:
        raise SystemExit(f"check failed: {len(swept.table)} trials, {fused.fused} fused, failures {fused.failures}")
    return {
        "versions": {"ray": ray.__version__, "mlflow": mlflow.__version__, "torch": torch.__version__},
        "python": sys.version.split()[0],
        "trials": len(swept.table),
        "fused_pairs": fused.fused,
        "seconds_since_start": {k: round(v, 1) for k, v in timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (major.minor)")
    parser.add_argument("--out", type=Path, default=REPO / ".gpu_bundle")
    parser.add_argument("--check", action="store_true", help="run the Ray layer once on the CPU with this Python")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(check(Path(scratch)), indent=2, default=str))
        return
    if not re.fullmatch(r"3\.\d+", args.python):
        raise SystemExit(f"--python {args.python}: give major.minor, e.g. 3.12")
    started = time.perf_counter()
    pinned = closure(roots(), args.python)
    print(f"{len(pinned)} packages: " + ", ".join(f"{n}=={v}" for n, v in pinned.items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    wheels = args.out / "wheels"  # kept: a rebuild downloads only what changed
    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch) / "site"
        _pip("download", "--no-deps", "--quiet", "-d", str(wheels), *_target(args.python),
             *(f"{n}=={v}" for n, v in pinned.items()))  # fmt: skip
        wanted = [w for w in sorted(wheels.glob("*.whl")) if _wheel_name(w) in pinned]
        _pip("install", "--no-deps", "--no-compile", "--quiet", "--target", str(site), *_target(args.python),
             *map(str, wanted))  # fmt: skip
        unpacked = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        removed = trim(site) + strip_binaries(site)
        partial = args.out / "site.tar.xz.partial"  # renamed once whole: never a half bundle
        with tarfile.open(partial, "w:xz", preset=9) as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
        partial.replace(args.out / "site.tar.xz")
    size = (args.out / "site.tar.xz").stat().st_size
    record = {
        "python": args.python,
        "packages": pinned,
        "left_out": [*LEFT_OUT, "*.js.map", "__pycache__", *sorted(NOT_NEEDED)],
        "unpacked_bytes": unpacked - removed,
        "trimmed_bytes": removed,
        "archive_bytes": size,
        "built_with": f"Python {sys.version.split()[0]}",
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "bundle.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.out / 'site.tar.xz'}: {size / 2**20:.1f} MiB ({(unpacked - removed) / 2**20:.0f} MiB unpacked)")


if __name__ == "__main__":
    main()
