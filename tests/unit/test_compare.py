"""``dwsfusion compare`` on tiny data: one scoring path for every kind of method (a folder,
a checkpoint, a baseline) that gives exactly what ``fuse`` + ``evaluate`` give; matching
names; a missing image named before any scoring; ranks, tests and every file of the report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from dwsfusion.color import read_image, write_image
from dwsfusion.compare import CompareError, Method, folder_index, leaderboard, score_pairs
from dwsfusion.evaluate import evaluate_folders
from dwsfusion.pairs import find_pairs
from dwsfusion.quickstart import write_baselines
from pipelines.cli import main

METRICS = ("Qabf", "VIF", "SSIM", "MSE")


def _compare(samples_dir: Path, out: Path, *methods: str, extra: tuple[str, ...] = ()) -> int:
    pairs = ["--ir", str(samples_dir / "ir"), "--vi", str(samples_dir / "vi")]
    given = [w for m in methods for w in ("--method", m)]
    return main(["compare", *pairs, *given, "--output", str(out), "--metrics", ",".join(METRICS), *extra, "--quiet"])


def _means(path: Path) -> dict[str, dict[str, float]]:
    return {r["method"]: {k: float(v) for k, v in r.items() if k != "method"} for r in csv.DictReader(path.open())}


def test_every_kind_of_method_scores_as_fuse_and_evaluate_do(samples_dir, random_checkpoint, tmp_path):
    """A checkpoint fused on the fly and a baseline give exactly the numbers of their written
    images scored by ``evaluate``; a folder of them gives the same again."""
    fused = tmp_path / "fused"
    ir, vi = samples_dir / "ir", samples_dir / "vi"
    assert main(["fuse", "--checkpoint", str(random_checkpoint), "--ir", str(ir), "--vi", str(vi),
                 "--output", str(fused), "--quiet"]) == 0  # fmt: skip
    pairs, _ = find_pairs(ir, vi)
    mean_folder = write_baselines(pairs, tmp_path / "baselines")["mean"]
    methods = (f"model={random_checkpoint}", f"written={fused}", "mean=mean", f"mean_folder={mean_folder}")
    assert _compare(samples_dir, tmp_path / "report", *methods, extra=("--figure-pairs", "2", "--no-costs")) == 0
    means = _means(tmp_path / "report" / "leaderboard.csv")
    assert list(means) == ["model", "written", "mean", "mean_folder"]  # the order given
    assert list(next(iter(means.values()))) == list(METRICS)  # a column per metric, by its name
    for folder, names in ((fused, ("model", "written")), (mean_folder, ("mean", "mean_folder"))):
        expected = {k: m for k, (m, _) in evaluate_folders(ir, vi, folder, progress=False).summary().items()}
        for name in names:
            assert means[name] == pytest.approx({k: expected[k] for k in METRICS}, rel=1e-12), name
    per_pair = list(csv.DictReader((tmp_path / "report" / "per_pair.csv").open()))
    assert len(per_pair) == 4 * len(pairs) and set(per_pair[0]) == {"method", "name", *METRICS}


def test_the_report_holds_ranks_tests_costs_figures_and_the_conventions(samples_dir, random_checkpoint, tmp_path):
    out = tmp_path / "report"
    assert _compare(samples_dir, out, f"model={random_checkpoint}", "max=max", "ir=ir", "vi=vi") == 0
    names = {p.name for p in out.iterdir()}
    expected = {"leaderboard.csv", "per_pair.csv", "leaderboard.md", "costs.csv", "crops.png", "distributions.png"}
    assert expected | {"compare.json", "compare.html"} == names
    summary = json.loads((out / "compare.json").read_text())
    # ranks follow each metric's direction: the lowest MSE ranks first
    mse = {m: summary["means"][m]["MSE"] for m in summary["means"]}
    assert summary["ranks"][min(mse, key=mse.get)]["MSE"] == 1 and summary["best"]["MSE"] == min(mse, key=mse.get)
    qabf = {m: summary["means"][m]["Qabf"] for m in summary["means"]}
    assert summary["best"]["Qabf"] == max(qabf, key=qabf.get)
    for metric, best in summary["best"].items():  # the paired test: none for the best, a p for the rest
        assert summary["p_values"][best][metric] is None
        assert all(0 < summary["p_values"][m][metric] <= 1 for m in summary["means"] if m != best)
    costs = list(csv.DictReader((out / "costs.csv").open()))
    assert [c["method"] for c in costs] == ["model"] and float(costs[0]["parameters"]) == 9035
    assert 1.0 < float(costs[0]["gflops_640x480"]) < 2.0  # the convolutions of a 640x480 pair
    markdown = (out / "leaderboard.md").read_text()
    assert "± " in markdown and "Conventions:" in markdown and "BT.601" in markdown and "| model | 9,035 |" in markdown
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "Wilcoxon" in page and "<table>" in page
    for figure in ("crops.png", "distributions.png"):
        image, _ = read_image(out / figure)
        assert image.shape[0] > 200 and image.std() > 10  # a real picture, not a blank canvas


def test_identical_methods_tie_with_p_one(samples_dir, tmp_path):
    from dwsfusion.compare import build_fusers

    pairs, _ = find_pairs(samples_dir / "ir", samples_dir / "vi")
    fusers = build_fusers([Method.parse("a=mean"), Method.parse("b=mean")], load_generator=None)
    board = leaderboard(score_pairs(fusers, pairs, ("VIF", "SSIM")))
    assert all(board.entries["b"][k].p_value == 1.0 for k in ("VIF", "SSIM"))
    assert all(board.entries[m][k].rank == 1 for m in ("a", "b") for k in ("VIF", "SSIM"))  # a tie shares rank 1
    assert board.entries["a"]["VIF"].mean == board.entries["b"]["VIF"].mean


def test_the_fields_naming_habits_match_and_a_clash_is_refused(tmp_path):
    """Same stem, other extension, other case, and numbers by value (1.png is pair 01)."""
    folder = tmp_path / "method"
    folder.mkdir()
    for name in ("1.jpg", "Scene_A.PNG", "b.bmp", "notes.txt"):
        (folder / name).write_bytes(b"")  # matched by name alone: nothing is read yet
    assert set(folder_index(folder)) == {"1", "scene_a", "b"}
    (folder / "01.png").write_bytes(b"")
    with pytest.raises(CompareError, match="1.jpg: matches the same pair as 01.png"):
        folder_index(folder)


def test_method_specs_say_what_is_wrong(tmp_path, random_checkpoint):
    assert Method.parse("m=max").kind == "baseline"
    assert Method.parse(f"m={random_checkpoint}").kind == "model"
    assert Method.parse("m=models:/dwsfusion@champion").kind == "model"
    (tmp_path / "train_ckpt").mkdir()  # a training checkpoint folder holds no image
    shutil.copy(random_checkpoint, tmp_path / "train_ckpt" / "state.pt")
    assert Method.parse(f"m={tmp_path / 'train_ckpt'}").kind == "model"
    for spec, message in (
        ("nomethod", "expected NAME=SOURCE"),
        ("m=/no/such/folder", "no such file or folder"),
        ("bad/name=max", "a name takes letters"),
    ):
        with pytest.raises(CompareError, match=message):
            Method.parse(spec)


def test_a_missing_image_is_named_before_scoring_or_left_out_by_choice(samples_dir, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    stems = sorted(p.stem for p in (samples_dir / "vi").iterdir())
    for stem in stems[1:]:
        shutil.copy(samples_dir / "vi" / f"{stem}.png", partial / f"{stem}.png")
    assert _compare(samples_dir, tmp_path / "refused", f"partial={partial}", "max=max") == 2
    err = capsys.readouterr().err
    assert f"partial ({partial}) has no image for 1 of {len(stems)} pair(s): {stems[0]}" in err
    assert not (tmp_path / "refused").exists()  # nothing scored, nothing written
    assert (
        _compare(samples_dir, tmp_path / "common", f"partial={partial}", "max=max", extra=("--missing", "common")) == 0
    )
    summary = json.loads((tmp_path / "common" / "compare.json").read_text())
    assert summary["pairs"] == stems[1:] and summary["left_out"] == [f"{partial}: no image for pair {stems[0]}"]
    assert stems[0] in (tmp_path / "common" / "leaderboard.md").read_text()


def test_a_result_of_another_size_is_named_and_its_method_left_off_the_board(samples_dir, tmp_path, capsys):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for path in sorted((samples_dir / "vi").iterdir()):
        image, _ = read_image(path)
        write_image(wrong / path.name, image[:-2] if path == sorted((samples_dir / "vi").iterdir())[0] else image)
    assert _compare(samples_dir, tmp_path / "report", f"wrong={wrong}", "max=max") == 1
    err = capsys.readouterr().err
    assert "differs from its sources'" in err and "not on the board (a pair failed): wrong" in err
    assert list(_means(tmp_path / "report" / "leaderboard.csv")) == ["max"]
    assert "Not on the board" in (tmp_path / "report" / "leaderboard.md").read_text()


def test_a_metric_nan_on_small_pairs_is_averaged_over_the_others_and_says_so():
    """MS-SSIM is NaN below 161 px: its mean and test skip those pairs, and the table says over how many."""
    from dwsfusion.compare import Scores
    from dwsfusion.compare_report import markdown

    methods = [Method("a", "mean", "baseline"), Method("b", "max", "baseline")]
    rows = {
        "a": [{"name": "p1", "MS-SSIM": 0.5}, {"name": "p2", "MS-SSIM": float("nan")}, {"name": "p3", "MS-SSIM": 0.7}],
        "b": [{"name": "p1", "MS-SSIM": 0.4}, {"name": "p2", "MS-SSIM": float("nan")}, {"name": "p3", "MS-SSIM": 0.6}],
    }
    board = leaderboard(Scores(methods, ("MS-SSIM",), rows, {}))
    assert board.pairs == ["p1", "p2", "p3"] and board.best["MS-SSIM"] == "a"
    assert board.entries["a"]["MS-SSIM"].mean == pytest.approx(0.6) and board.entries["a"]["MS-SSIM"].pairs == 2
    assert "MS-SSIM: over 2 of the 3 pairs (NaN on the others)." in markdown(board, {})
