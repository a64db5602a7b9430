"""The GPU figures of benchmarks/gpu_check.sh (which runs the gpu tests first), written to
benchmarks/results/gpu_check.json. Needs only torch, NumPy, OpenCV and pytorch-msssim; the
Ray part runs where Ray is importable. Each figure is timed with the device synchronised.

- parity: the release weights on CUDA vs CPU, every TNO pair (max difference in grey levels);
- fusion throughput on 640x480 pairs, fp32 and bf16, batch 1 and larger batches (the best kept);
- batch fusion as the actors do it (decode, fuse, write PNG; with and without the metric suite);
- training samples/s at batch 16 on 240x320 patches, one process (fp32, bf16);
- a short training from scratch on ../shared RoadScene (release recipe), evaluated on TNO.

- fusion variants that may win on a GPU: fp16, channels_last, CUDA graphs, torch.compile
  (each one measured, kept in the results beside the plain figure, errors recorded).

The results file is rewritten after every part, so a run cut short keeps what it measured;
``--deadline`` (seconds from the start) shortens the training and skips parts that no longer fit.
Run: python benchmarks/gpu_check.py [--device cuda] [--train-seconds 180] [--deadline 420] [--quick]
(--quick and --device cpu exist to check the script itself on a CPU.)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, SHARED, Stopwatch, timed, write_result  # noqa: E402

from dwsfusion.checkpoints import load_generator  # noqa: E402
from dwsfusion.fuse import fuse_luma, load_pair  # noqa: E402
from dwsfusion.loss_weights import LossWeights  # noqa: E402
from dwsfusion.model import Generator, adaptive_conv  # noqa: E402
from dwsfusion.pairs import find_pairs  # noqa: E402
from dwsfusion.step import build_networks, build_optimizers, recalibrate_batchnorm, train_step  # noqa: E402
from dwsfusion.stream import StreamOptions, fuse_and_score  # noqa: E402

WEIGHTS = SHARED / "official" / "dwsfusion_official_generator.pth"
TNO, ROADSCENE = SHARED / "data" / "TNO", SHARED / "data" / "RoadScene"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn``, each call timed to the end of its device work (``timed``
    synchronises before and after each timed call, so none starts with another's work queued)."""
    return statistics.median(timed(fn, repeats, warmup, sync=lambda: _sync(device)))


def _generator(device: str) -> tuple[Generator, str]:
    if WEIGHTS.exists():
        return load_generator(WEIGHTS).to(device), "release"
    torch.manual_seed(0)
    return Generator().eval().to(device), "random init"


def parity(device: str) -> dict:
    """Max |CUDA - CPU| in 8-bit levels over the TNO pairs (or generated scenes)."""
    cpu, weights = _generator("cpu")
    other = _generator(device)[0]
    sources = [load_pair(p) for p in find_pairs(TNO / "ir", TNO / "vi")[0]] if (TNO / "ir").is_dir() else []
    if not sources:
        rng = np.random.default_rng(0)
        sources = [
            type("S", (), {"ir": rng.random((240, 320), np.float32), "vis_y": rng.random((240, 320), np.float32)})
        ]
    worst = 0.0
    for source in sources:
        a = np.floor(fuse_luma(cpu, source.ir, source.vis_y) * 255)
        b = np.floor(fuse_luma(other, source.ir, source.vis_y) * 255)
        worst = max(worst, float(np.abs(a - b).max()))
    return {"parity_max_abs_levels": worst, "parity_pairs": len(sources), "parity_weights": weights}


def fusion_throughput(device: str, quick: bool) -> dict:
    """Pairs/s of the generator's forward on 640x480 device tensors, by precision and batch."""
    generator, _ = _generator(device)
    batches = (1, 4) if quick else (1, 8, 32, 64)
    size = (120, 160) if quick else (480, 640)
    figures = {}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for batch in batches:
            ir = torch.rand(batch, 1, *size, device=device)
            vi = torch.rand(batch, 1, *size, device=device)

            def forward(ir=ir, vi=vi, dtype=dtype):
                with (
                    torch.inference_mode(),
                    torch.autocast(torch.device(device).type, dtype=dtype, enabled=bool(dtype)),
                ):
                    generator.fuse(ir, vi)

            seconds = _timed(forward, device, repeats=3 if quick else 10)
            figures[f"{precision}_batch{batch}"] = batch / seconds
    best = max(figures, key=figures.get)
    return {"fusion_pairs_per_s": figures[best], "fusion_best": best, "fusion_pairs_per_s_by_setting": figures}


def _graphed(fn, device: str):
    """``fn`` captured once as a CUDA graph (static inputs): replaying it skips the launches."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _with_setting(owner, name: str, value, fn):
    """``fn`` with ``owner.name`` set to ``value`` during each call, restored after. (Not
    mock.patch.object: cudnn's flags are module properties, which it cannot restore.)"""

    def run():
        saved = getattr(owner, name)
        setattr(owner, name, value)
        try:
            return fn()
        finally:
            setattr(owner, name, saved)

    return run


def profile(device: str, quick: bool) -> dict:
    """Where the time of one batch-64 fp32 640x480 forward goes: the top operators by device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    generator, _ = _generator(device)
    batch, size = (4, (120, 160)) if quick else (64, (480, 640))
    ir, vi = torch.rand(batch, 1, *size, device=device), torch.rand(batch, 1, *size, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch.inference_mode():
        generator.fuse(ir, vi)
        _sync(device)
        with profiler(activities=activities) as prof:
            for _ in range(3):
                generator.fuse(ir, vi)
            _sync(device)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in rows) or 1.0
    top = [
        {"op": e.key, "ms_per_batch": getattr(e, key) / 3e3, "share": getattr(e, key) / total, "calls": e.count // 3}
        for e in rows[:15]
    ]
    return {"profile_fp32_batch": batch, "profile_ms_per_batch": total / 3e3, "profile_top_ops": top}


def fusion_variants(device: str, quick: bool, best: str, time_left) -> dict:
    """fp16, channels_last, CUDA graphs and torch.compile against the plain bf16 forward, at
    batch 1 and at the best batch of ``fusion_throughput``; a variant that fails is recorded."""
    generator, _ = _generator(device)
    size = (120, 160) if quick else (480, 640)
    best_batch = int(best.rsplit("batch", 1)[1])
    figures: dict[str, float | str] = {}
    for batch in sorted({1, best_batch}):
        ir = torch.rand(batch, 1, *size, device=device)
        vi = torch.rand(batch, 1, *size, device=device)

        def forward(ir=ir, vi=vi, dtype=torch.bfloat16, model=generator):
            device_type = torch.device(device).type
            with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                return model.fuse(ir, vi)[0]

        def channels_last(ir=ir, vi=vi, forward=forward):
            model = copy.deepcopy(generator).to(memory_format=torch.channels_last)
            a, b = (t.contiguous(memory_format=torch.channels_last) for t in (ir, vi))
            return lambda: forward(a, b, model=model)

        variants = {
            "bf16": lambda forward=forward: forward,
            "fp16": lambda forward=forward: lambda: forward(dtype=torch.float16),
            "bf16_channels_last": channels_last,
        }
        if device.startswith("cuda"):
            variants["bf16_cuda_graph"] = lambda forward=forward: _graphed(forward, device)
            # the slice path (one host sync per layer) in place of the sync-free grid_sample path
            variants["fp32_slice_path"] = lambda forward=forward: _with_setting(
                adaptive_conv, "adaptive_dilated_conv2d", adaptive_conv._sliced_conv2d, lambda: forward(dtype=None)
            )
            variants["fp32_cudnn_benchmark"] = lambda forward=forward: _with_setting(
                torch.backends.cudnn, "benchmark", True, lambda: forward(dtype=None)
            )
        for name, make in variants.items():
            key = f"{name}_batch{batch}"
            if time_left() < 30:
                figures[key] = "skipped: deadline"
                continue
            try:
                figures[key] = batch / _timed(make(), device, repeats=3 if quick else 10)
            except Exception as exc:  # noqa: BLE001 - a variant that fails is a finding, not a crash
                figures[key] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    if device.startswith("cuda") and not quick and time_left() > 60:
        # Last: compiling takes a minute or more, and a failure must not cost the rest.
        started = Stopwatch()
        try:
            compiled = torch.compile(generator.fuse, dynamic=False)
            ir = torch.rand(best_batch, 1, *size, device=device)
            vi = torch.rand(best_batch, 1, *size, device=device)

            def forward_compiled(ir=ir, vi=vi):
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return compiled(ir, vi)[0]

            forward_compiled()
            figures["compile_seconds"] = started.elapsed()
            figures[f"bf16_compiled_batch{best_batch}"] = best_batch / _timed(forward_compiled, device, repeats=10)
        except Exception as exc:  # noqa: BLE001
            figures[f"bf16_compiled_batch{best_batch}"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    return {"fusion_variants_pairs_per_s": figures}


def batch_fusion(device: str, quick: bool) -> dict:
    """What a fuse actor does per call (decode, fuse same-size pairs together, write PNG, and
    score), on TNO + RoadScene pairs repeated, with and without the full metric suite."""
    from dwsfusion.constants import METRIC_NAMES

    generator, _ = _generator(device)
    pairs = []
    for dataset in (TNO, ROADSCENE):
        if (dataset / "ir").is_dir():
            pairs += find_pairs(dataset / "ir", dataset / "vi")[0]
    if not pairs:
        from dwsfusion.samples import write_samples

        root = write_samples(Path(tempfile.mkdtemp()) / "samples", count=6)
        pairs = find_pairs(root / "ir", root / "vi")[0]
    pairs = pairs[:8] if quick else pairs
    figures = {}
    with tempfile.TemporaryDirectory() as out:
        # Warm-up over every pair: each new image size builds its FFT plans and band masks
        # once (measured: a cold first pass ran at a third of the speed of a warm one).
        fuse_and_score(generator, pairs, out, StreamOptions(METRIC_NAMES, precision="bf16", batch_size=16))
    for label, metrics in (("fusion_only", ()), ("with_metrics", METRIC_NAMES)):
        with tempfile.TemporaryDirectory() as out:
            _sync(device)
            started = Stopwatch()
            for i in range(0, len(pairs), 16):
                rows = fuse_and_score(
                    generator, pairs[i : i + 16], out, StreamOptions(metrics, precision="bf16", batch_size=16)
                )
                assert not any("error" in r for r in rows), rows
            _sync(device)
            figures[label] = len(pairs) / started.elapsed()
    return {
        "batch_fusion_pairs": len(pairs),
        "batch_fusion_pairs_per_s": figures["fusion_only"],
        "batch_fusion_with_metrics_pairs_per_s": figures["with_metrics"],
        "batch_fusion_metrics_ratio": figures["with_metrics"] / figures["fusion_only"],
    }


def training_speed(device: str, quick: bool) -> dict:
    """Samples/s of train_step at batch 16 on 240x320 patches (fp32, bf16), one process."""
    batch, size = (4, (176, 176)) if quick else (16, (240, 320))
    figures = {}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        nets = build_networks()
        for module in nets.modules().values():
            module.to(device)
        opts = build_optimizers(nets)
        ir = torch.rand(batch, 1, *size, device=device)
        vi = torch.rand(batch, 1, *size, device=device)

        def step(nets=nets, opts=opts, ir=ir, vi=vi, dtype=dtype):
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=bool(dtype)):
                train_step(nets, opts, ir, vi, LossWeights())

        figures[precision] = batch / _timed(step, device, repeats=2 if quick else 10)
    return {"train_samples_per_s": max(figures.values()), "train_samples_per_s_by_precision": figures}


def _crops(sources, rng, batch: int, size: tuple[int, int], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    irs, vis = [], []
    for _ in range(batch):
        ir, vi = sources[rng.integers(len(sources))]
        y, x = rng.integers(0, ir.shape[0] - size[0] + 1), rng.integers(0, ir.shape[1] - size[1] + 1)
        irs.append(ir[y : y + size[0], x : x + size[1]])
        vis.append(vi[y : y + size[0], x : x + size[1]])
    to = lambda planes: torch.from_numpy(np.stack(planes))[:, None].to(device)  # noqa: E731
    return to(irs), to(vis)


def short_training(device: str, seconds: float, quick: bool) -> dict:
    """The release recipe (lr 0.01, batch 16, 240x320 crops) from scratch on RoadScene for
    ``seconds``, BatchNorm statistics re-estimated, then the TNO means (Ray-free loop)."""
    from dwsfusion.evaluate import evaluate_generator

    if not (ROADSCENE / "ir").is_dir() or not (TNO / "ir").is_dir():
        return {"short_training": "skipped: ../shared RoadScene and TNO needed"}
    size = (176, 176) if quick else (240, 320)
    sources = []
    for pair in find_pairs(ROADSCENE / "ir", ROADSCENE / "vi")[0]:
        source = load_pair(pair)
        if source.ir.shape[0] >= size[0] and source.ir.shape[1] >= size[1]:
            sources.append((source.ir, source.vis_y))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    nets = build_networks()
    for module in nets.modules().values():
        module.to(device)
    opts = build_optimizers(nets, 0.01, 0.01)
    steps, started = 0, Stopwatch()
    while started.elapsed() < seconds or steps == 0:
        ir, vi = _crops(sources, rng, 16, size, device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            train_step(nets, opts, ir, vi, LossWeights())
        steps += 1
    recalibrate_batchnorm(nets.generator, [_crops(sources, rng, 16, size, device) for _ in range(8)])
    tno = find_pairs(TNO / "ir", TNO / "vi")[0]
    tno = tno[:3] if quick else tno
    evaluation = evaluate_generator(nets.generator.eval(), tno, ("Qabf", "VIF", "SSIM"), progress=False)
    means = {k: v[0] for k, v in evaluation.summary().items()}
    return {"short_training_seconds": seconds, "short_training_steps": steps, "short_training_tno": means}


def ray_part(device: str, quick: bool) -> dict:
    try:
        import mlflow  # noqa: F401
        import pydantic  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        return {"ray": "not importable here: the Ray-on-GPU figures were not measured"}
    return {"ray": "importable: see the gpu and ray tests in the log"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--train-seconds", type=float, default=180.0)
    parser.add_argument("--deadline", type=float, default=None, help="seconds from the start for all parts")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the GPU")
    parser.add_argument("--tests", default="", help="the gpu tests' summary line, for the record")
    parser.add_argument("--out", default=None, help="also copy the results here (e.g. $OUT)")
    parser.add_argument(
        "--parts", default=None, help="comma-separated parts to run, merged into the existing results (default: all)"
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --quick to check the script")
    began = Stopwatch()
    deadline = args.deadline if args.deadline is not None else float("inf")

    def time_left() -> float:
        return deadline - began.elapsed()

    earlier = RESULTS / "gpu_check.json"
    result = json.loads(earlier.read_text()) if args.parts and earlier.exists() else {}
    for written_by_write_result in ("benchmark", "date", "machine"):
        result.pop(written_by_write_result, None)
    result.setdefault("part_seconds", {})
    result |= {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu_tests": args.tests,
    }

    def save() -> None:
        if args.quick:  # a check of the script, not a measurement: nothing goes to the results
            return
        path = write_result("gpu_check", result, echo=False)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / path.name).write_text(path.read_text())

    # Keep 60 s after the training for BatchNorm re-estimation, the TNO scores and the notes.
    train_seconds = lambda: max(10.0, min(args.train_seconds, time_left() - 60))  # noqa: E731
    # Keep 150 s for the training when it runs last: it is the part that shrinks to fit.
    variants_left = lambda: time_left() - (150 if "short_training" in chosen else 0)  # noqa: E731
    parts = {
        "parity": lambda: parity(args.device),
        "fusion": lambda: fusion_throughput(args.device, args.quick),
        "batch_fusion": lambda: batch_fusion(args.device, args.quick),
        "training_speed": lambda: training_speed(args.device, args.quick),
        "profile": lambda: profile(args.device, args.quick),
        "fusion_variants": lambda: fusion_variants(args.device, args.quick, result["fusion_best"], variants_left),
        "short_training": lambda: short_training(args.device, train_seconds(), args.quick),
        "ray": lambda: ray_part(args.device, args.quick),
    }
    chosen = args.parts.split(",") if args.parts else list(parts)  # read by variants_left when it runs
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(parts)}")
    for name, part in ((name, parts[name]) for name in chosen):
        if time_left() < 20:
            result[name] = "skipped: deadline"
            continue
        started = Stopwatch()
        try:
            result.update(part())
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others' figures
            result[name] = f"failed: {type(exc).__name__}: {exc}"
        result["part_seconds"][name] = round(started.elapsed(), 1)
        print(f"  {name}: {result['part_seconds'][name]:.0f} s", flush=True)
        save()
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
