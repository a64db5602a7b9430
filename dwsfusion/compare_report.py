"""What ``dwsfusion compare`` writes: the means CSV, the per-pair CSV, a Markdown table, the
cost table, two figures and one self-contained HTML page holding them all."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .compare import CONVENTIONS, LOWER_IS_BETTER, Fuser, Leaderboard, Scores  # noqa: E402
from .evaluate import gray_u8, rows_csv, written_gray_u8  # noqa: E402
from .files import atomic_path, atomic_write  # noqa: E402
from .pairs import ImagePair  # noqa: E402

SIGNIFICANT = 0.05  # a method marked * differs from the best at this level (paired test)
FILES = {
    "means": "leaderboard.csv",
    "per_pair": "per_pair.csv",
    "markdown": "leaderboard.md",
    "costs": "costs.csv",
    "crops": "crops.png",
    "distributions": "distributions.png",
    "json": "compare.json",
    "html": "compare.html",
}


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def cell(mean: float, std: float, rank: int, best: bool, p_value: float | None, star: str = "*") -> str:
    """One Markdown leaderboard cell: 'mean ± std (rank)', bold for the best, ``star`` after it
    where the paired test against the best gives p < ``SIGNIFICANT`` (the docs escape it: ``\\*``)."""
    text = f"{_number(mean)} ± {_number(std, 3)} ({rank})"
    if best:
        return f"**{text}**"
    return f"{text} {star}" if p_value is not None and p_value < SIGNIFICANT else text


def means_csv(board: Leaderboard) -> str:
    """One row per method: ``method`` then one column of means per metric, named by the metric."""
    rows = [{"method": m, **{k: board.entries[m][k].mean for k in board.metrics}} for m in board.methods]
    return rows_csv(rows, ["method", *board.metrics])


def per_pair_csv(scores: Scores, board: Leaderboard) -> str:
    """Every score behind the board: ``method``, ``name`` (the pair) and the metrics."""
    keep = set(board.pairs)
    rows = [{"method": m, **r} for m in board.methods for r in scores.rows[m] if r["name"] in keep]
    return rows_csv(rows, ["method", "name", *board.metrics])


def markdown(board: Leaderboard, costs: dict[str, dict[str, float]]) -> str:
    """The leaderboard (mean ± std and rank per metric, * where the paired test against the
    best gives p < 0.05), the tests' p-values, the cost table and the conventions."""
    arrows = {k: "↓" if k in LOWER_IS_BETTER else "↑" for k in board.metrics}
    head = "| method | " + " | ".join(f"{k} {arrows[k]}" for k in board.metrics) + " |"
    rule = "|---|" + "---|" * len(board.metrics)
    lines = [
        f"Over {len(board.pairs)} pairs. Cells: mean ± std (rank); **bold**: best; * differs from the best "
        f"(paired Wilcoxon signed-rank test, p < {SIGNIFICANT}).",
        "",
        head,
        rule,
    ]
    for method in board.methods:
        cells = [
            cell(e.mean, e.std, e.rank, board.best[metric] == method, e.p_value)
            for metric, e in ((k, board.entries[method][k]) for k in board.metrics)
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for metric in board.metrics:
        counted = {board.entries[m][metric].pairs for m in board.methods}
        if counted != {len(board.pairs)}:
            lines += ["", f"{metric}: over {max(counted)} of the {len(board.pairs)} pairs (NaN on the others)."]
    lines += [
        "",
        "Paired test against the best method of each metric (two-sided p; — for the best itself):",
        "",
        "| method | " + " | ".join(board.metrics) + " |",
        rule,
    ]
    for method in board.methods:
        ps = [board.entries[method][k].p_value for k in board.metrics]
        lines.append(f"| {method} | " + " | ".join("—" if p is None else f"{p:.3g}" for p in ps) + " |")
    if costs:
        lines += ["", cost_table(costs)]
    if board.left_out:
        lines += ["", f"Pairs left out (every method is scored on the {len(board.pairs)} pairs all of them have):"]
        lines += [f"- {problem}" for problem in board.left_out]
    if board.excluded:
        lines += ["", "Not on the board:"]
        lines += [
            f"- {name}: {'; '.join(problems[:5])}" + (" ..." if len(problems) > 5 else "")
            for name, problems in board.excluded.items()
        ]
    lines += ["", "Conventions:", *(f"- {c}" for c in CONVENTIONS)]
    return "\n".join(lines) + "\n"


def cost_table(costs: dict[str, dict[str, float]]) -> str:
    """The models' costs as a Markdown table (leaderboard.md and docs/compare.md)."""
    lines = [
        "| model | parameters | GFLOP per 640×480 pair | seconds per 640×480 pair (the generator on the luma, here) |",
        "|---|---|---|---|",
    ]
    for name, c in costs.items():
        lines.append(f"| {name} | {int(c['parameters']):,} | {c['gflops_640x480']:.2f} | {c['seconds_640x480']:.3f} |")
    return "\n".join(lines)


def costs_csv(costs: dict[str, dict[str, float]]) -> str:
    rows = [{"method": name, **c} for name, c in costs.items()]
    return rows_csv(rows, ["method", "parameters", "gflops_640x480", "seconds_640x480"])


# ------------------------------------------------------------------ figures
def _detail_window(ir: np.ndarray, vi: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side``-pixel window with the most structure in both sources (gradient
    energy after a blur, so that sensor noise does not choose it), searched on a grid of
    half-window steps."""
    ir, vi = (cv2.GaussianBlur(x.astype(np.float32), (0, 0), 2.0) for x in (ir, vi))
    energy = sum(np.abs(np.diff(x, axis=1))[:-1] + np.abs(np.diff(x, axis=0))[:, :-1] for x in (ir, vi))
    h, w = ir.shape
    step = max(1, side // 2)
    best, where = -1.0, (0, 0)
    for y in range(0, max(1, h - side + 1), step):
        for x in range(0, max(1, w - side + 1), step):
            total = float(energy[y : y + side, x : x + side].sum())
            if total > best:
                best, where = total, (y, x)
    return where


def crops_figure(fusers: list[Fuser], pairs: list[ImagePair], side: int = 160):
    """For each pair, the same crop of the sources and of every method's result, side by side
    (each method's image is made again for these few pairs: the scoring keeps none in memory)."""
    columns = ["IR", "VIS", *(f.method.name for f in fusers)]
    fig, axes = plt.subplots(len(pairs), len(columns), figsize=(1.9 * len(columns), 2.0 * len(pairs)), squeeze=False)
    for row, pair in enumerate(pairs):
        ir, vi = gray_u8(pair.ir), gray_u8(pair.vi)
        s = min(side, *ir.shape)
        y, x = _detail_window(ir, vi, s)
        images = [ir, vi]
        images += [written_gray_u8(fuser.image(pair)[0]) for fuser in fusers]
        for col, (title, image) in enumerate(zip(columns, images, strict=True)):
            ax = axes[row][col]
            ax.imshow(image[y : y + s, x : x + s], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{pair.stem}\n({x},{y}) {s}²", fontsize=8)
    fig.tight_layout()
    return fig


def distributions_figure(scores: Scores, board: Leaderboard):
    """Per metric, each method's per-pair values: a box and the points."""
    metrics = list(board.metrics)
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    keep = set(board.pairs)
    for i, metric in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        data = []
        for method in board.methods:
            values = np.array([float(r[metric]) for r in scores.rows[method] if r["name"] in keep])
            data.append(values[~np.isnan(values)])
        ax.boxplot(data, showfliers=False)
        for j, values in enumerate(data, start=1):
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.plot(j + jitter, values, ".", markersize=3, alpha=0.6)
        ax.set_xticks(range(1, len(board.methods) + 1), board.methods, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{metric} {'(lower is better)' if metric in LOWER_IS_BETTER else ''}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for j in range(len(metrics), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> Path:
    """A PNG written atomically (a unique temporary name, then renamed)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------------ the page
def _html_table(board: Leaderboard) -> str:
    head = "".join(f"<th>{html.escape(k)} {'↓' if k in LOWER_IS_BETTER else '↑'}</th>" for k in board.metrics)
    body = []
    for method in board.methods:
        cells = []
        for metric in board.metrics:
            e = board.entries[method][metric]
            best = board.best[metric] == method
            mark = " *" if (e.p_value is not None and e.p_value < SIGNIFICANT) else ""
            title = "best" if e.p_value is None else f"paired test against {board.best[metric]}: p = {e.p_value:.3g}"
            cells.append(
                f'<td class="{"best" if best else ""}" title="{html.escape(title)}">{_number(e.mean)}'
                f"<br><small>± {_number(e.std)} ({e.rank}){mark}</small></td>"
            )
        body.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def _embedded(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def page(board: Leaderboard, costs: dict, figures: dict[str, Path], title: str, sources: dict[str, str]) -> str:
    """One HTML file with everything in it (figures embedded), readable offline."""
    methods = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(s)}</li>" for n, s in sources.items())
    cost_rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{int(c['parameters']):,}</td><td>{c['gflops_640x480']:.2f}</td>"
        f"<td>{c['seconds_640x480']:.3f}</td></tr>"
        for n, c in costs.items()
    )
    costs_html = (
        "<h2>Cost of the models</h2><table><tr><th>model</th><th>parameters</th><th>GFLOP per 640×480 pair</th>"
        f"<th>seconds per 640×480 pair (this machine)</th></tr>{cost_rows}</table>"
        if costs
        else ""
    )
    left_out = "".join(f"<li>{html.escape(p)}</li>" for p in board.left_out)
    excluded = "".join(
        f"<li><b>{html.escape(n)}</b>: {html.escape('; '.join(p[:5]))}</li>" for n, p in board.excluded.items()
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 6px;text-align:right}th{background:#f4f4f4}"
        "td.best{background:#e3f4e3;font-weight:bold}img{max-width:100%}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(board.methods)} methods over the same {len(board.pairs)} pairs, one metric code (dwsfusion.metrics).
Cells: mean, then ± std (rank); green: best; * differs from the best (paired Wilcoxon signed-rank test,
p &lt; {SIGNIFICANT}; hover a cell for its p).</p>
<ul>{methods}</ul>
{_html_table(board)}
{"<h2>Not on the board</h2><ul>" + excluded + "</ul>" if excluded else ""}
{"<h2>Pairs left out</h2><ul>" + left_out + "</ul>" if left_out else ""}
{costs_html}
<h2>The same crops, side by side</h2>{_embedded(figures["crops"]) if "crops" in figures else "<p>(none)</p>"}
<h2>Per-pair values</h2>{_embedded(figures["distributions"])}
<h2>Conventions</h2><ul>{"".join(f"<li>{html.escape(c)}</li>" for c in CONVENTIONS)}</ul>
</body></html>
"""


def write_report(
    out: Path,
    scores: Scores,
    board: Leaderboard,
    costs: dict[str, dict[str, float]],
    fusers: list[Fuser],
    figure_pairs: list[ImagePair],
    crop: int = 160,
    title: str = "IR-VIS fusion comparison",
) -> dict[str, Path]:
    """Everything into ``out`` (each file atomically); returns the paths by role (``FILES``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {role: out / name for role, name in FILES.items()}
    atomic_write(paths["means"], means_csv(board))
    atomic_write(paths["per_pair"], per_pair_csv(scores, board))
    atomic_write(paths["markdown"], markdown(board, costs))
    if costs:
        atomic_write(paths["costs"], costs_csv(costs))
    else:
        paths.pop("costs")
    figures = {"distributions": save_figure(distributions_figure(scores, board), paths["distributions"])}
    on_board = [f for f in fusers if f.method.name in board.methods]
    if figure_pairs:
        figures["crops"] = save_figure(crops_figure(on_board, figure_pairs, crop), paths["crops"])
    else:
        paths.pop("crops")
    summary = {
        "pairs": board.pairs,
        "methods": {f.method.name: {"source": f.method.source, "kind": f.method.kind} for f in fusers},
        "means": {m: {k: board.entries[m][k].mean for k in board.metrics} for m in board.methods},
        "stds": {m: {k: board.entries[m][k].std for k in board.metrics} for m in board.methods},
        "ranks": {m: {k: board.entries[m][k].rank for k in board.metrics} for m in board.methods},
        "p_values": {m: {k: board.entries[m][k].p_value for k in board.metrics} for m in board.methods},
        "best": board.best,
        "excluded": board.excluded,
        "left_out": board.left_out,
        "costs": costs,
        "conventions": list(CONVENTIONS),
    }
    atomic_write(paths["json"], json.dumps(summary, indent=2, allow_nan=True) + "\n")
    sources = {f.method.name: f"{f.method.kind}: {f.method.source}" for f in fusers}
    atomic_write(paths["html"], page(board, costs, figures, title, sources))
    return paths
