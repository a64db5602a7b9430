"""Every command shown in README.md and docs/*.md, checked against what it calls.

Commands are the lines of ```bash blocks (continuations joined) and inline code spans that begin
with a program: ``dwsfusion``, ``make``, ``python``, ``pytest``, ``mlflow``, ``ray``. Each must name
real things: a ``dwsfusion`` command must parse with the real parser (an unknown option fails
argparse), a ``fuse`` must be one consistent form, ``key=value`` overrides must validate against
the named config; ``make`` targets must exist; scripts must exist and accept the options given;
``mlflow``/``ray`` options must be in their ``--help``. The cheap ones (samples, fuse, evaluate)
then run on tiny data.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from pipelines.cli import DISPATCH_DESTS, _fuse_form, build_parser

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("dwsfusion", "make", "python", "bash", "pytest", "mlflow", "ray", "curl")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def _commands(page: Path) -> list[str]:
    text = page.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()  # trailing comments
            if line and not line.startswith("#"):
                found.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if span.split(" ", 1)[0] in PROGRAMS and " " in span:
            found.append(span)
    return found


def _argv(command: str) -> list[str]:
    """The words after leading VAR=value assignments, for the first program in the line."""
    words = shlex.split(command)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words


ALL = [(page.relative_to(REPO).as_posix(), command) for page in PAGES for command in _commands(page)]


def test_the_pages_show_commands():
    pages = {page for page, _ in ALL}
    assert "README.md" in pages and len(pages) >= 6 and len(ALL) >= 40


def _subcommands(parser) -> dict:
    import argparse

    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _check_dwsfusion(argv: list[str]) -> None:
    parser = build_parser()
    if all(not w.startswith("-") and "=" not in w for w in argv) and len(argv) <= 2:
        # prose naming a verb (`dwsfusion prep`, `dwsfusion pipeline resume`): the verb must exist
        verbs = _subcommands(parser)
        assert argv[0] in verbs, f"no verb {argv[0]}"
        if len(argv) == 2 and _subcommands(verbs[argv[0]]):
            assert argv[1] in _subcommands(verbs[argv[0]]), f"no action {argv[1]} of {argv[0]}"
        return
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"argparse refused it (status {exc.code})") from None
    if args.verb == "fuse":
        _fuse_form(set(vars(args)) - {"verb", "quiet", "verbose"})
    overrides = getattr(args, "overrides", None)
    config = getattr(args, "config", None)
    if overrides is not None and config and (REPO / config).is_file():
        from pipelines.config import TrainConfig, load_config
        from pipelines.workflow import WorkflowConfig
        from tune import SweepConfig

        model = {"train": TrainConfig, "tune": SweepConfig, "pipeline": WorkflowConfig}[args.verb]
        extra = ["data=runs/patches"] if args.verb == "train" and "data" not in (REPO / config).read_text() else []
        load_config(model, REPO / config, [*extra, *overrides])


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))


@cache
def _help(*program: str) -> str:
    done = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def _check_options_in_help(argv: list[str]) -> None:
    """Every --option before a ``--`` appears in the help of the (sub)command it follows."""
    depth = next((i for i, w in enumerate(argv) if w.startswith("-")), len(argv))
    program = tuple([str(Path(sys.executable).with_name(argv[0])), *argv[1 : min(depth, 3)]])
    text = _help(*program)
    for word in argv[depth:]:
        if word == "--":  # the entrypoint after it is checked on its own
            break
        if word.startswith("--"):
            assert re.search(rf"{re.escape(word.split('=')[0])}\b", text), f"{word} is not an option of {argv[:depth]}"


@pytest.mark.parametrize(("page", "command"), ALL, ids=[f"{p}:{c[:60]}" for p, c in ALL])
def test_command_names_real_things(page, command):
    argv = _argv(command)
    program = argv[0]
    if program == "dwsfusion":
        _check_dwsfusion(argv[1:])
    elif program == "make":
        assert set(argv[1:]) - {w for w in argv[1:] if "=" in w} <= _makefile_targets()
    elif program in ("python", "bash"):
        script = REPO / argv[1]
        assert script.is_file(), f"{argv[1]} does not exist"
        text = script.read_text()
        for option in (w.split("=")[0] for w in argv[2:] if w.startswith("--")):
            assert f'"{option}"' in text, f"{argv[1]} takes no {option}"
    elif program == "pytest":
        for marker in re.findall(r"-m\s+['\"]?([^'\"]+)", command):
            for name in re.findall(r"[a-z]+", marker):
                assert name in ("and", "or", "not", "slow", "gpu", "ray", "multinode"), f"unknown marker {name}"
    elif program in ("mlflow", "ray"):
        _check_options_in_help(argv)
        if "--" in argv:  # a job's entrypoint is one of our commands
            entrypoint = argv[argv.index("--") + 1 :]
            assert entrypoint[0] == "dwsfusion", entrypoint
            _check_dwsfusion(entrypoint[1:])
    elif program == "curl":  # a request to a served model: the body the server expects
        body = json.loads(argv[argv.index("-d") + 1])
        assert set(body["inputs"]) == {"ir", "vi"} and "/invocations" in command
    else:
        pytest.fail(f"no check for {program}")


def test_no_option_can_collide_with_the_dispatch():
    parser = build_parser()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if action.choices and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
            elif action.option_strings:
                assert action.dest not in DISPATCH_DESTS, f"{action.option_strings} writes {action.dest}"


CHEAP_VERBS = ("samples", "fuse", "evaluate")


def _runnable(tmp: Path, checkpoint: Path, samples: Path) -> list[list[str]]:
    """The cheap documented commands, their paths pointed at tiny data in ``tmp``."""
    paths = {
        "--checkpoint": str(checkpoint),
        "--ir": str(samples / "ir"),
        "--vi": str(samples / "vi"),
        "--out": None,
        "--output": None,
        "--fused": None,
        "--csv": None,
    }
    runs = []
    for _, command in ALL:
        argv = _argv(command)
        if argv[0] != "dwsfusion" or argv[1] not in CHEAP_VERBS or "--input" in argv:
            continue
        if not any(w.startswith("-") for w in argv):  # prose naming the verb, not a command
            continue
        argv = list(argv[1:])
        for i, word in enumerate(argv[:-1]):
            if word in paths:
                value = paths[word] or str(tmp / f"{argv[0]}{i}" / Path(argv[i + 1]).name)
                if word in ("--out", "--output") and argv[0] == "fuse":
                    value = str(tmp / "fused")
                if word == "--fused":
                    value = str(tmp / "fused")
                argv[i + 1] = value
        runs.append(argv)
    return sorted(runs, key=lambda a: CHEAP_VERBS.index(a[0]))


def test_the_cheap_commands_run_on_tiny_data(tmp_path, random_checkpoint, samples_dir):
    from pipelines.cli import main

    runs = _runnable(tmp_path, random_checkpoint, samples_dir)
    assert {argv[0] for argv in runs} == set(CHEAP_VERBS)
    for argv in runs:
        assert main([*argv, "--quiet"] if argv[0] != "samples" else argv) == 0, argv


def test_measured_figures_in_the_docs_come_from_the_results_files():
    """docs/performance.md, the generated blocks of docs/fidelity.md and docs/compare.md are what
    benchmarks/report.py makes of benchmarks/results/ now (rerun it after a benchmark)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import report

    assert report.PAGE.read_text() == report.render(), "run: python benchmarks/report.py"
    fidelity = report.FIDELITY.read_text()
    assert report.BLOCK.search(fidelity) and report.render_fidelity(fidelity) == fidelity
    compare = report.COMPARE.read_text()
    assert "<!-- compare_tno:" in compare and report.render_compare(compare) == compare
