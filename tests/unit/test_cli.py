"""The fuse, evaluate and samples verbs as a user runs them, including bad input."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from dwsfusion.color import read_image, write_image
from dwsfusion.metrics import METRIC_NAMES
from pipelines.cli import main


def _copy_pairs(src, dst, stems=None):
    for sub in ("ir", "vi"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / sub).iterdir()):
            if stems is None or f.stem in stems:
                shutil.copy(f, dst / sub / f.name)
    return dst


def _fuse(checkpoint, ir_dir, vi_dir, out) -> int:
    """``dwsfusion fuse`` as a user types it."""
    args = ["--checkpoint", str(checkpoint), "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(out)]
    return main(["fuse", *args, "--quiet"])


def _stray_files(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_fuse_then_evaluate(samples_dir, random_checkpoint, tmp_path, capsys):
    out = tmp_path / "fused"
    rc = _fuse(random_checkpoint, samples_dir / "ir", samples_dir / "vi", out)
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.stem + ".png" for p in (samples_dir / "ir").iterdir())
    fused, max_value = read_image(out / names[0])
    source, _ = read_image(samples_dir / "vi" / names[0])
    assert fused.shape == source.shape and fused.ndim == 3 and max_value == 255  # colour VIS -> colour

    csv_path = tmp_path / "m.csv"
    rc = main(
        [
            "evaluate",
            "--ir",
            str(samples_dir / "ir"),
            "--vi",
            str(samples_dir / "vi"),
            "--fused",
            str(out),
            "--csv",
            str(csv_path),
            "--quiet",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["name", *METRIC_NAMES]
    assert [r["name"] for r in rows] == [n[:-4] for n in names]
    printed = capsys.readouterr().out
    assert "Qabf" in printed and "mean" in printed


def test_gray_and_16_bit_inputs_keep_their_form(random_checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    write_image(src / "ir" / "a.png", rng.integers(0, 65536, (41, 57), dtype=np.uint16))
    write_image(src / "vi" / "a.png", rng.integers(0, 65536, (41, 57), dtype=np.uint16))
    assert _fuse(random_checkpoint, src / "ir", src / "vi", tmp_path / "out") == 0
    fused, max_value = read_image(tmp_path / "out" / "a.png")
    assert fused.shape == (41, 57) and max_value == 65535


def test_missing_partner_is_named_and_nothing_is_written(samples_dir, random_checkpoint, tmp_path, capsys):
    src = _copy_pairs(samples_dir, tmp_path / "src")
    lonely = sorted((src / "vi").iterdir())[0]
    lonely.unlink()
    rc = _fuse(random_checkpoint, src / "ir", src / "vi", tmp_path / "out")
    assert rc == 2
    assert f"{lonely.stem}.png: no visible partner" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_size_mismatch_and_unreadable_files_are_named_and_skipped(samples_dir, random_checkpoint, tmp_path, capsys):
    src = _copy_pairs(samples_dir, tmp_path / "src")
    stems = sorted(p.stem for p in (src / "ir").iterdir())
    write_image(src / "vi" / f"{stems[0]}.png", np.zeros((50, 60), np.uint8))  # wrong size
    (src / "ir" / f"{stems[1]}.png").write_bytes(b"\x89PNG broken")  # unreadable
    out = tmp_path / "out"
    rc = _fuse(random_checkpoint, src / "ir", src / "vi", out)
    err = capsys.readouterr().err
    assert rc == 1
    assert "not registered" in err and f"{stems[0]}.png" in err
    assert f"{stems[1]}.png: not a readable image" in err
    assert sorted(p.name for p in out.iterdir()) == [f"{stems[2]}.png"]  # the good pair only
    assert _stray_files(out) == []


def test_empty_folder_and_bad_checkpoint(tmp_path, random_checkpoint, capsys):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    args = ["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(["fuse", "--checkpoint", str(random_checkpoint), *args]) == 2
    assert "no image pairs found" in capsys.readouterr().err
    assert main(["fuse", "--checkpoint", str(tmp_path / "none.pt"), *args]) == 2


def test_samples_are_deterministic(tmp_path):
    assert main(["samples", "--out", str(tmp_path / "a"), "--count", "2", "--seed", "3"]) == 0
    assert main(["samples", "--out", str(tmp_path / "b"), "--count", "2", "--seed", "3"]) == 0
    for sub in ("ir/scene_00.png", "vi/scene_01.png"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path, capsys):
    assert main(["quickstart", "--workdir", str(tmp_path), "--steps", "2", "--quiet"]) == 0
    assert "Qabf" in capsys.readouterr().out


def test_fuse_forms_refuse_each_others_options(random_checkpoint, samples_dir, tmp_path, capsys):
    """The folder form runs without Ray; an option of the other form is refused, naming it and
    the form that takes it, before anything is written."""
    folder = ["--checkpoint", str(random_checkpoint), "--ir", str(samples_dir / "ir"), "--vi", str(samples_dir / "vi")]
    assert main(["fuse", *folder, "--out", str(tmp_path / "out"), "--quiet", "--tile-size", "512"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    for extra in (["--actors", "2"], ["--metrics", "Qabf"], ["--input", str(samples_dir)], ["--max-pixels", "9"]):
        assert main(["fuse", *folder, "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err
        assert extra[0] in err and "batch form" in err and "folder form" in err
    batch = ["--checkpoint", str(random_checkpoint), "--input", str(samples_dir), "--output", str(tmp_path / "b")]
    assert main(["fuse", *batch, "--device", "cuda"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["fuse", "--model", "models:/x@champion", "--input", str(samples_dir)]) == 2
    assert "missing --output" in capsys.readouterr().err
    assert main(["fuse", *batch, "--metrics", "Qabf,Bogus"]) == 2
    assert "unknown Bogus" in capsys.readouterr().err
    # object storage: a prefix takes shards, not a folder of pairs, and an object is no archive output;
    # both refused by name before any work (not folded into a local "s3:/..." folder)
    assert main(["fuse", *batch[:4], "--output", "s3://bucket/out"]) == 2
    assert "s3://bucket/out: a folder of pairs is fused into a folder or a local archive" in capsys.readouterr().err
    assert main(["fuse", *batch[:2], "--input", "s3://bucket/in/", "--output", "s3://bucket/out.zip"]) == 2
    assert "s3://bucket/out.zip: on object storage the output is a prefix" in capsys.readouterr().err
    assert not list(Path.cwd().glob("s3:*"))
    for verb in (["samples", "--out"], ["fuse", *folder, "--out"], ["quickstart", "--workdir"]):
        assert main([*verb, "s3://bucket/x"]) == 2  # local-only outputs refuse a URI by name
        assert "s3://bucket/x: this command writes local files only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_the_batch_form_takes_several_inputs_and_what_its_help_says():
    """``--input`` takes many shards; ``--metrics`` takes what its help names (all, none, a list)."""
    from pipelines.batch.run import FuseJob
    from pipelines.cli import build_parser, settings_from

    parser = build_parser()
    args = parser.parse_args(["fuse", "--checkpoint", "c.pt", "--input", "a.tar", "s3://b/night/", "--output", "o"])
    assert args.input == ["a.tar", "s3://b/night/"]
    fuse = next(a for a in parser._subparsers._group_actions[0].choices["fuse"]._actions if a.dest == "metrics")
    assert "all, none, or a list" in fuse.help and "()" not in fuse.help
    for given, metrics in (("none", ()), ("all", METRIC_NAMES), ("Qabf,VIF", ("Qabf", "VIF"))):
        args = parser.parse_args(["fuse", "--checkpoint", "c", "--input", "a.tar", "--output", "o", "--metrics", given])
        job = settings_from(args, FuseJob, input=args.input, output=args.output, checkpoint="c")
        assert job.metrics == metrics and job.input == ("a.tar",)


def test_the_console_script_runs_samples_fuse_and_evaluate(tmp_path, random_checkpoint):
    """The installed `dwsfusion` command in subprocesses, as a user types it (no Ray involved)."""
    import subprocess
    import sys
    from pathlib import Path

    dwsfusion = str(Path(sys.executable).with_name("dwsfusion"))

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([dwsfusion, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    run("samples", "--out", str(tmp_path / "pairs"), "--count", "2")
    pairs = ["--ir", str(tmp_path / "pairs" / "ir"), "--vi", str(tmp_path / "pairs" / "vi")]
    done = run("fuse", "--checkpoint", str(random_checkpoint), *pairs, "--out", str(tmp_path / "fused"), "--quiet")
    assert f"fused 2 pair(s) into {tmp_path / 'fused'}" in done.stdout
    done = run("evaluate", *pairs, "--fused", str(tmp_path / "fused"), "--csv", str(tmp_path / "m.csv"), "--quiet")
    assert "Qabf" in done.stdout and (tmp_path / "m.csv").is_file()


def test_ctrl_c_is_a_short_line_and_status_130(monkeypatch, capsys):
    from pipelines import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.HANDLERS, "fuse", interrupted)
    assert main(["fuse", "--checkpoint", "c", "--input", "a.tar", "--output", "o"]) == 130
    err = capsys.readouterr().err
    assert "interrupted (the same command again goes on" in err and "Traceback" not in err


def _parsers(parser, path=("dwsfusion",)):
    """(words, parser) of the program and every verb and sub-verb under it."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_verb_and_sub_verb_renders_its_help(capsys):
    """``--help`` of each (sub)command prints and exits 0: a help text argparse cannot format
    (a bare ``%`` in a description, as "0.01 = 1 %" once was) fails here, not in front of a user."""
    from pipelines.cli import build_parser

    rendered = []
    for words, parser in _parsers(build_parser()):
        with pytest.raises(SystemExit) as exc:
            main([*words[1:], "--help"])
        assert exc.value.code == 0, words
        assert parser.format_usage().split()[1] == words[0] and capsys.readouterr().out.startswith("usage:")
        rendered.append(" ".join(words))
    assert {"dwsfusion register", "dwsfusion fuse", "dwsfusion pipeline unlock"} <= set(rendered)
    assert len(rendered) >= 14
    register = next(p for w, p in _parsers(build_parser()) if w[-1] == "register").format_help()
    assert "0.01 = 1 %" in register


def test_the_folder_form_takes_output_and_keeps_out_as_its_alias(samples_dir, random_checkpoint, tmp_path):
    """``--output`` names the output in both forms of ``fuse``; ``--out`` still works."""
    folder = ["--checkpoint", str(random_checkpoint), "--ir", str(samples_dir / "ir"), "--vi", str(samples_dir / "vi")]
    for option in ("--output", "--out"):
        assert main(["fuse", *folder, option, str(tmp_path / option.strip("-")), "--quiet"]) == 0
    names = {option: sorted(p.name for p in (tmp_path / option).iterdir()) for option in ("output", "out")}
    assert names["output"] == names["out"]
    assert len(list((tmp_path / "output").glob("*.png"))) == 3
