"""The measured figures of the docs, from the files the benchmarks write: docs/performance.md
whole, the reproduction, seed, adversarial, noise and seed-spread probe blocks of docs/fidelity.md and the
leaderboard of docs/compare.md come from
``benchmarks/results/*.json`` through this script (a test checks the pages are up to date).

Run: python benchmarks/report.py          (rewrites all three)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from dwsfusion.compare_report import SIGNIFICANT, cell, cost_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "performance.md"
FIDELITY = REPO / "docs" / "fidelity.md"
COMPARE = REPO / "docs" / "compare.md"


def _block(name: str) -> re.Pattern:
    """A generated block of docs/fidelity.md: its opening comment, the text, its closing comment."""
    return re.compile(rf"(<!-- {name}:[^\n]*-->\n).*?(<!-- end {name} -->)", re.S)


BLOCK = _block("reproduce_tno")
SEED_METRICS = ("Qabf", "VIF", "SSIM", "MI")
# The adversarial study's probes (examples/recipe_probe.py, docs/fidelity.md): file -> seed, and
# the critics as the command set them (--adversarial, --critic-steps, --lr-d, --adversarial-from).
GAN_PROBES = {
    "sum_600": (0, "none (weight 0)"),
    "gan_0.01": (0, "0.01, 2 steps at lr 0.001, from step 200"),
    "gan_0.05": (0, "0.05, 2 steps at lr 0.001, from step 200"),
    "sum_600_seed1": (1, "none (weight 0)"),
    "gan_0.01_seed1": (1, "0.01, 2 steps at lr 0.001, from step 200"),
    "gan_0.05_seed1": (1, "0.05, 2 steps at lr 0.001, from step 200"),
}
# The VIS noise study's probes at the reproduction's recipe (sum start, no critics): file -> seed, --vis-noise.
NOISE_PROBES = {
    "sum_600": (0, "3 (the recipe)"),
    "vis_noise_5_600": (0, "5"),
    "sum_600_seed1": (1, "3 (the recipe)"),
    "vis_noise_5_600_seed1": (1, "5"),
}
# Where the seeds' spread comes from: file -> the networks' start (--seed), the crops' and noise draws (--data-seed).
SPREAD_PROBES = {
    "sum_600": ("0", "0"),
    "sum_600_init0_data1": ("0", "1"),
    "sum_600_init1_data0": ("1", "0"),
    "sum_600_seed1": ("1", "1"),
    "sum_600_fusion_from_seed1": ("0, its fusion head from 1", "0"),
}
# Where the AlphaNet starts: file -> (seed, its start and alpha there). Seeds 1 and 3 draw a dead one.
ALPHA_PROBES = {
    "sum_600": (0, "release's (alive: alpha 0.25-0.30)"),
    "sum_600_alpha_alive_seed0": (0, "alive, alpha 0.3"),
    "sum_600_seed1": (1, "release's (dead: alpha 0)"),
    "sum_600_alpha_alive_seed1": (1, "alive, alpha 0.3"),
    "sum_600_seed3": (3, "release's (dead: alpha 0)"),
    "sum_600_alpha_alive_seed3": (3, "alive, alpha 0.3"),
}


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(result: dict) -> str:
    machine = result.get("machine", {})
    return f"{machine.get('cpu_count', '?')} CPUs, torch {machine.get('torch', '?')}, {result.get('date', '?')}"


def _train_step(r: dict) -> list[str]:
    timed = f"median of {r['timed_steps_per_run'] * r['rounds']} steps per tree, {r['rounds']} alternating runs"
    rows = []
    for shape, f in r["results"].items():
        g, d = f["relative_gradient_difference_generator"], f["relative_gradient_difference_d_ir"]
        rows.append(
            f"| bare `train_step`, {shape.replace('batch', 'batch ').replace('_', ' at ')}² | "
            f"**{f['seconds_per_step_current']:.2f} s** vs {f['seconds_per_step_baseline']:.2f} s at commit "
            f"{r['baseline']} ({timed}): **{f['speedup']:.2f}×** (goal {r['goal_speedup']}×); "
            f"first batch's losses within {f['max_relative_loss_difference']:.0e}, "
            f"gradients within {g:.0e} (G) and {d:.0e} "
            "(D, through the penalty's double backward) relative |"
        )
    return rows


def _train_speed(r: dict) -> list[str]:
    losses = r.get("g_total_by_epoch", {})
    same = bool(losses) and losses["bare"] == losses["ray"]
    batches = "the same batches: every epoch's mean loss equal" if same else "epoch losses differ"
    return [
        f"| Ray Train, one worker, vs the bare loop ({r['input']}) | {r['ray_samples_per_second']:.2f} vs "
        f"{r['bare_samples_per_second']:.2f} samples/s: **{r['ray_over_bare']:.2f}** of the bare loop "
        f"(goal {r['goal_ratio']}; both: each epoch's samples over its wall time, median over the epochs "
        f"after the first, the bare loop run before and after Ray Train; "
        f"{batches}) |"
    ]


def _fuse(r: dict) -> list[str]:
    return [
        f"| fusing one 640×480 pair ({r['input']}) | **{r['seconds_per_pair_median']:.3f} s** median, "
        f"{r['seconds_per_pair_min']:.3f} s min (goal {r['goal_seconds']} s); the general `grid_sample` path "
        f"{r['general_path_seconds_per_pair_median']:.3f} s; fast vs general path: max difference "
        f"{r['max_abs_diff_fast_vs_general']:.0e}, {r['pixels_differing_after_8bit_truncation']} pixels change "
        f"after 8-bit truncation |"
    ]


def _fuse_engines(r: dict) -> list[str]:
    per, best = r["seconds_per_pair_median"], r["seconds_per_pair_min"]
    parity, whole = r["parity"], r["whole_process_25_tno_seconds"]
    rows = [
        f"| one pair, the forward pass alone, warm ({r['input']}) | PyTorch **{per['torch']:.3f} s** median "
        f"({best['torch']:.3f} min); ONNX Runtime {r['onnxruntime']} **{per['onnxruntime']:.2f} s** median "
        f"({best['onnxruntime']:.2f} min) |",
        f"| the export against PyTorch, {parity['pairs']} pairs as written 8-bit images | at most "
        f"**{parity['max_grey_levels']} grey level** ({parity['pixels_differing']} pixels differ); largest float "
        f"difference {parity['max_abs']:.0e} |",
    ]
    if whole:
        rows.append(
            f"| whole-process `dwsfusion fuse` of the 25 TNO pairs (start-up, reading, writing) | PyTorch "
            f"{whole['torch']:.1f} s; ONNX Runtime {whole['onnxruntime']:.1f} s |"
        )
    rows += [
        f"| `dwsfusion export` itself (torch.export, then ONNX) | {r['export_seconds']:.0f} s |",
        f"| the CPU default: the fastest engine with parity | **{r['default_engine']}** |",
    ]
    return rows


def _fuse_whole(r: dict) -> list[str]:
    return [
        f"| `dwsfusion fuse` ({r['input']}) vs a naive plain-PyTorch script doing the same, median of "
        f"{r['rounds']} alternating rounds | {r['dwsfusion_fuse_seconds']:.1f} s vs "
        f"{r['naive_reference_seconds']:.1f} s: **{r['speedup']:.2f}×** (goal {r['goal_speedup']}×) |"
    ]


def _metrics(r: dict) -> list[str]:
    rows = []
    for label, total, per in (
        ("NumPy suite", "seconds_per_pair_mean", "seconds_per_metric_mean"),
        ("torch suite on the CPU", "torch_suite_seconds_per_pair_mean", "torch_suite_seconds_per_metric_mean"),
    ):
        if total in r:
            slowest = sorted(r[per], key=r[per].get, reverse=True)[:4]
            rows.append(
                f"| the 14 metrics per pair, {label} ({r['input']}) | **{r[total]:.3f} s**; slowest: "
                + ", ".join(f"{k} {r[per][k]:.3f}" for k in slowest)
                + " |"
            )
    if "authors" in r:
        a = r["authors"]
        rows.append(
            f"| {', '.join(a['metrics'])} ({a['pairs']}): ours ({a['ours_suite']}) vs the authors' evaluation code | "
            f"**{a['ours_seconds_per_pair']:.3f} s** vs {a['authors_seconds_per_pair']:.3f} s per pair: "
            f"**{a['speedup']:.1f}×** (goal {a['goal_speedup']}×); values within {a['max_relative_difference']:.0e} "
            f"relative |"
        )
    if "authors_cold" in r:
        c = r["authors_cold"]
        rows.append(
            f"| the same, {c['pairs']} | **{c['ours_seconds_per_pair']:.3f} s** (first pair "
            f"{c['ours_first_pair_seconds']:.3f} s) vs {c['authors_seconds_per_pair']:.3f} s per pair: "
            f"**{c['speedup']:.1f}×** |"
        )
    return rows


def _prep(r: dict) -> list[str]:
    return [
        f"| `prep` ({r['input']}) vs `cv2.imdecode` of the same files | {r['prep_seconds']:.1f} s "
        f"({r['prep_patches_per_s']:.0f} patches/s) vs {r['raw_decode_seconds']:.1f} s: "
        f"**{r['prep_vs_raw_decode']:.2f}** of raw decode (goal {r['goal_ratio']}) |"
    ]


def _train_input(r: dict) -> list[str]:
    return [
        f"| training input ({r['input']}): Parquet stream vs in-memory tensors | "
        f"{r['seconds_per_step_parquet_stream']:.2f} s vs {r['seconds_per_step_in_memory']:.2f} s per step: "
        f"the stream adds **{100 * r['stream_overhead_fraction']:.1f} %** "
        f"(goal ≤ {100 * r['goal_overhead_fraction']:.0f} %) |"
    ]


def _batch_fuse(r: dict) -> list[str]:
    runs = "; ".join(
        f"{k.replace('_', ' ')}: {v['pairs_per_second']:.2f} pairs/s = {v['ratio_to_bare_loop']:.2f} of it"
        for k, v in r["batch"].items()
    )
    return [
        f"| `dwsfusion fuse` of {r.get('shards', 1)} .tar shard(s) ({r['pairs']} TNO + RoadScene pairs, "
        f"metrics: {r['metrics']}) vs a bare loop | "
        f"bare loop {r['bare_loop_pairs_per_second']:.2f} pairs/s; {runs} |"
    ]


def _batch_fuse_scale(r: dict) -> list[str]:
    sizes = "; ".join(
        f"{int(size):,} pairs ({v['shards']} shards, {v['input_mb'] / 1024:.1f} GB): first pair written after "
        f"**{v['first_pair_written_s']:.0f} s**, driver peak RSS **{v['driver_peak_rss_mb']:.0f} MB**, driver wrote "
        f"**{v['driver_bytes_written_mb']:.1f} MB**"
        + ("" if v["finished"] else f" (stopped {r['cap_s']:.0f} s after the first shard, {v['shards_done']} done)")
        for size, v in r["scale"].items()
    )
    one, two = r["throughput"]["1_actors"], r["throughput"]["2_actors"]
    return [
        f"| `dwsfusion fuse --input DIR --output DIR --metrics none --actors 2 --batch-size "
        f"{next(iter(r['scale'].values()))['batch_size']}`, {r['image']}, {r['shard_pairs']} pairs per shard, "
        f"as the archive grows | {sizes} |",
        f"| steady pairs/s ({r['throughput_pairs']} pairs in 4 shards, 1 CPU per actor, --batch-size "
        f"{r['throughput_batch_size']}) vs a bare loop "
        f"(one process, one thread) | bare loop {r['bare_loop_pairs_per_second']:.2f}; 1 actor "
        f"{one['steady_pairs_per_second']:.2f} ({one['over_bare']:.2f}×); "
        f"2 actors {two['steady_pairs_per_second']:.2f}: "
        f"**{r['two_actors_over_twice_bare']:.2f}** of twice the bare loop (goal 0.9) |",
    ]


SECTIONS: list[tuple[str, str, Callable[[dict], list[str]], str]] = [
    ("train_step_speed", "Training step", _train_step, "python benchmarks/train_step_speed.py"),
    ("train_speed", "Training under Ray Train", _train_speed, "python benchmarks/train_speed.py"),
    (
        "train_speed_reproduce",
        "Training under Ray Train, the reproduction's step",
        _train_speed,
        "python benchmarks/train_speed.py --batch 16 --patch 240 --adversarial 0 --steps 12 --epochs 4 --tag reproduce",
    ),
    ("train_input", "Training input", _train_input, "python benchmarks/train_input.py"),
    ("fuse_speed", "Fusion", _fuse, "python benchmarks/fuse_speed.py"),
    ("fuse_engines", "Fusion engines: PyTorch and ONNX Runtime", _fuse_engines, "python benchmarks/fuse_engines.py"),
    ("fuse_whole_process", "Fusion, whole process", _fuse_whole, "python benchmarks/fuse_whole_process.py"),
    ("metric_speed", "Metrics", _metrics, "python benchmarks/metric_speed.py"),
    ("batch_fuse_speed_all", "Batch fusion", _batch_fuse, "python benchmarks/batch_fuse_speed.py"),
    ("batch_fuse_scale", "Batch fusion at archive scale", _batch_fuse_scale, "python benchmarks/batch_fuse_scale.py"),
    ("prep_speed_64_pairs_per_task", "Patch preparation", _prep, "python benchmarks/prep_speed.py"),
]


def render() -> str:
    lines = [
        "# Performance, measured",
        "",
        "Every figure here is read from the file a benchmark wrote (`benchmarks/results/`), by",
        "`python benchmarks/report.py`; `tests/unit/test_docs.py` fails when this page and the files",
        "disagree. Benchmarks are scripts, never timed assertions in tests. The machine is named in",
        "each row's file; unless it says otherwise, this 2-core CPU box. GPU figures come from",
        "`benchmarks/gpu_check.sh` ([testing.md](testing.md)).",
        "",
    ]
    for name, title, rows, command in SECTIONS:
        result = _load(name)
        lines += [f"## {title}", "", f"`{command}` → `benchmarks/results/{name}.json`", ""]
        if result is None:
            lines += ["Not measured yet.", ""]
            continue
        lines += ["| what | figure |", "|---|---|", *rows(result), "", f"Measured on: {_machine(result)}.", ""]
    gpu = _load("gpu_check")
    lines += ["## On a GPU", "", "`bash benchmarks/gpu_check.sh` → `benchmarks/results/gpu_check.json`", ""]
    if gpu is None:
        lines += ["Not measured yet: no GPU machine has run the check.", ""]
    else:
        lines += ["| what | figure | goal |", "|---|---|---|", *_gpu(gpu), ""]
        lines += [f"Measured on: {gpu['device']}, torch {gpu['torch']}, CUDA {gpu['cuda']} ({gpu['date']}).", ""]
    return "\n".join(lines)


def _gpu(r: dict) -> list[str]:
    """The GPU check's rows: what the issue set a goal for first, then what explains them."""
    fusion, variants = r["fusion_pairs_per_s_by_setting"], r.get("fusion_variants_pairs_per_s", {})
    best_bf16 = max(v for k, v in {**fusion, **variants}.items() if k.startswith("bf16") and isinstance(v, float))
    rows = [
        f"| gpu tests | {r['gpu_tests']} | pass |",
        f"| CUDA vs CPU, release weights, {r['parity_pairs']} TNO pairs | "
        f"{r['parity_max_abs_levels']:.0f} grey level(s) at most | ≤ 1 |",
        f"| fused 640×480 pairs/s, bf16, best setting | {best_bf16:.0f} | ≥ 1,000 |",
        f"| batch fusion with all 14 metrics / fusion only | {r['batch_fusion_metrics_ratio']:.2f} "
        f"({r['batch_fusion_with_metrics_pairs_per_s']:.1f} / {r['batch_fusion_pairs_per_s']:.1f} pairs/s, "
        f"{r['batch_fusion_pairs']} TNO + RoadScene pairs, one process) | ≥ 0.80 |",
    ]
    rows += [f"| forward pairs/s, {k.replace('_batch', ', batch ')} | {v:.0f} | |" for k, v in fusion.items()]
    rows += [
        f"| forward pairs/s, {k.replace('_batch', ', batch ').replace('_', ' ')} | {v:.0f} | |"
        for k, v in variants.items()
        if isinstance(v, float) and k != "compile_seconds" and k not in fusion  # not the plain ones again
    ]
    if "compile_seconds" in variants:
        rows.append(f"| torch.compile, first call | {variants['compile_seconds']:.0f} s | |")
    rows += [
        f"| train_step samples/s, batch 16, 240×320, {k} | {v:.1f} | |"
        for k, v in r["train_samples_per_s_by_precision"].items()
    ]
    if "short_training_tno" in r:
        tno = r["short_training_tno"]
        rows.append(
            f"| from scratch on RoadScene (bf16, lr 0.01, batch 16), {r['short_training_steps']} steps in "
            f"{r['short_training_seconds']:.0f} s: TNO Qabf / VIF / SSIM | "
            f"{tno['Qabf']:.3f} / {tno['VIF']:.3f} / {tno['SSIM']:.3f} | |"
        )
    if "profile_top_ops" in r:
        top = [op for op in r["profile_top_ops"] if op["op"].startswith("aten::")][:6]
        ops = ", ".join(f"{op['op'][6:]} {op['ms_per_batch']:.0f} ms" for op in top)
        rows.append(f"| where a batch-{r['profile_fp32_batch']} fp32 forward's device time goes (profiler) | {ops} | |")
    return rows


def reproduction() -> str:
    """The table of examples/reproduce.py's run: trained vs release vs mean and max fusion."""
    r = _load("reproduce_tno")
    if r is None:
        return "Not run yet.\n"
    means = r["tno_means"]
    columns = ("trained", "release", "mean", "max")
    prep = r.get("prep", {"patch_size": 240, "stride": 24, "scale": 1.0})  # older records: the first recipe
    resized = f"resized by {prep['scale']:g}, " if prep["scale"] != 1.0 else ""
    lines = [
        f"Trained on the RoadScene pairs ({resized}{prep['patch_size']}² patches, stride {prep['stride']}); "
        f"TNO, 25 pairs, our metric suite; {r['steps']} training steps in {r['epochs']} epochs (best: epoch "
        f"{r['best_epoch']}; learning rates {', '.join(f'{lr:g}' for lr in r['learning_rates'])}), "
        f"{r['wall_s'] / 60:.0f} min on {_machine(r)}" + (f"; `{r['config']}`:" if "config" in r else ":"),
        "",
        "| metric | " + " | ".join(columns) + " | trained / release |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for metric in ("Qabf", "VIF", "SSIM", "MI", "EN", "SD", "SF", "AG", "PSNR"):
        ratio = means["trained"][metric] / means["release"][metric]
        cells = " | ".join(f"{means[c][metric]:.3f}" for c in columns)
        lines.append(f"| {metric} | {cells} | {ratio:.3f} |")
    verdict = "met" if r["met"] else "not met"
    lines += ["", f"Goal ({r['goal']}): **{verdict}**. Source: `benchmarks/results/reproduce_tno.json`."]
    return "\n".join(lines) + "\n"


def _seed_runs() -> dict[int, tuple[str, dict]]:
    """Seed -> (file, result) of every reproduction of ``configs/reproduce.yaml`` as shipped but
    for its seed: reproduce_tno.json (seed 0) and reproduce_tno_seed<N>.json."""
    runs = {}
    for path in sorted(RESULTS.glob("reproduce_tno_seed*.json")):
        seed = re.fullmatch(r"reproduce_tno_seed(\d+)", path.stem)  # not another recipe's _seed3_ema
        if seed:
            runs[int(seed.group(1))] = (path.name, json.loads(path.read_text()))
    headline = _load("reproduce_tno")
    if headline is not None and headline.get("config") == "configs/reproduce.yaml":
        runs.setdefault(0, ("reproduce_tno.json", headline))
    return dict(sorted(runs.items()))


def seeds() -> str:
    """Per seed and over the seeds: TNO Qabf / VIF / SSIM / MI against the release."""
    runs = _seed_runs()
    if not runs:
        return "Not run yet.\n"
    header = " | ".join(f"{m} (× release)" for m in SEED_METRICS)
    lines = [f"| seed | {header} | best epoch / epochs | minutes | file |", "|---" * (len(SEED_METRICS) + 4) + "|"]
    ratios: dict[str, list[float]] = {m: [] for m in SEED_METRICS}
    for seed, (name, r) in runs.items():
        means = r["tno_means"]
        cells = []
        for m in SEED_METRICS:
            ratio = means["trained"][m] / means["release"][m]
            ratios[m].append(ratio)
            cells.append(f"{means['trained'][m]:.3f} ({ratio:.3f})")
        minutes = f"{r['wall_s'] / 60:.0f}"
        lines.append(f"| {seed} | {' | '.join(cells)} | {r['best_epoch']} / {r['epochs']} | {minutes} | `{name}` |")
    mean = " | ".join(f"**{sum(v) / len(v):.3f}**" for v in ratios.values())
    worst = " | ".join(f"{min(v):.3f}" for v in ratios.values())
    lines += [f"| mean × release | {mean} | | | |", f"| worst seed × release | {worst} | | | |"]
    headline = SEED_METRICS[:3]
    met = all(sum(ratios[m]) / len(ratios[m]) >= 1.0 and min(ratios[m]) >= 0.97 for m in headline)
    lines += [
        "",
        f"{len(runs)} seed(s). Goal (mean ≥ 1.00× and worst seed ≥ 0.97× the release on Qabf, VIF and SSIM, "
        f"over 3 seeds or more): **{'met' if met and len(runs) >= 3 else 'not met'}**.",
    ]
    return "\n".join(lines) + "\n"


def _probe_table(probes: dict[str, tuple[int | str, str]], varied: str, first_column: str = "seed") -> str:
    """One row per probe of a study: TNO at every evaluation (BatchNorm re-estimated)."""
    lines = [
        f"| {first_column} | {varied} | TNO VIF at 200 / 400 / 600 steps | Qabf | SSIM | file |",
        "|---|---|---|---|---|---|",
    ]
    for name, (seed, setting) in probes.items():
        r = _load(f"recipe_probe_{name}")
        if r is None:
            continue
        scores = [e["recalibrated_statistics"] for e in r["evaluations"]]
        cells = [" / ".join(f"{s[m]:.3f}" for s in scores) for m in ("VIF", "Qabf", "SSIM")]
        lines.append(f"| {seed} | {setting} | {' | '.join(cells)} | `recipe_probe_{name}.json` |")
    return "\n".join(lines) + "\n"


def gan_probes() -> str:
    return _probe_table(GAN_PROBES, "critics")


def noise_probes() -> str:
    return _probe_table(NOISE_PROBES, "VIS noise (grey levels)")


def alpha_probes() -> str:
    return _probe_table(ALPHA_PROBES, "AlphaNet start")


def spread_probes() -> str:
    return _probe_table(SPREAD_PROBES, "crops and noise drawn with seed", first_column="networks' start, seed")


COMPARE_METRICS = ("Qabf", "VIF", "SSIM", "MI", "SD", "PSNR", "EN", "Nabf")


def compare_tno() -> str:
    """docs/compare.md's leaderboard: benchmarks/compare_tno.py's run of ``dwsfusion compare``."""
    r = _load("compare_tno")
    if r is None:
        return "Not run yet.\n"
    methods = list(r["means"])
    lines = [
        f"TNO, {len(r['pairs'])} pairs; ours: {r['ours']}. Cells: mean ± std (rank); **bold**: best; "
        f"\\* differs from the best (paired Wilcoxon signed-rank test, p < {SIGNIFICANT}); ↓: lower is better.",
        "",
        "| method | " + " | ".join(f"{k}{' ↓' if k == 'Nabf' else ''}" for k in COMPARE_METRICS) + " |",
        "|---|" + "---|" * len(COMPARE_METRICS),
    ]
    for method in methods:
        cells = [
            cell(
                r["means"][method][k],
                r["stds"][method][k],
                r["ranks"][method][k],
                r["best"][k] == method,
                r["p_values"][method][k],
                star="\\*",
            )
            for k in COMPARE_METRICS
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        cost_table(r["costs"]),
        "",
        f"The whole comparison took {r['wall_s'] / 60:.1f} min on {_machine(r)}. "
        "Source: `benchmarks/results/compare_tno.json`.",
    ]
    return "\n".join(lines) + "\n"


def render_compare(text: str) -> str:
    return _block("compare_tno").sub(lambda m: m.group(1) + compare_tno() + m.group(2), text)


def render_fidelity(text: str) -> str:
    blocks: dict[re.Pattern, Callable[[], str]] = {
        BLOCK: reproduction,
        _block("gan_probes"): gan_probes,
        _block("noise_probes"): noise_probes,
        _block("spread_probes"): spread_probes,
        _block("alpha_probes"): alpha_probes,
        _block("reproduce_seeds"): seeds,
    }
    for pattern, render_block in blocks.items():
        text = pattern.sub(lambda m, render_block=render_block: m.group(1) + render_block() + m.group(2), text)
    return text


def main() -> None:
    PAGE.write_text(render())
    FIDELITY.write_text(render_fidelity(FIDELITY.read_text()))
    COMPARE.write_text(render_compare(COMPARE.read_text()))
    print(f"wrote {PAGE}, {FIDELITY} and {COMPARE}")


if __name__ == "__main__":
    sys.exit(main())
