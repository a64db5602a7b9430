"""The house rules, checked: dwsfusion/ is the pure library (importing every module pulls in no
Ray, MLflow or pydantic: a GPU machine with only torch, NumPy and OpenCV runs it), every import
arrow points down the layers of docs/architecture.md, and there is no circle."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import dwsfusion


def test_the_library_never_imports_ray_mlflow_or_pydantic():
    modules = [m.name for m in pkgutil.walk_packages(dwsfusion.__path__, "dwsfusion.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'pydantic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    assert "dwsfusion.step" in modules and "dwsfusion.model.generator" in modules


PACKAGES = ("dwsfusion", "data_prep", "pipelines", "tune")
# The layers, bottom first: a module imports from its own layer and those below, never above.
# Every pipelines module is a stage unless it is an entry point (the workflow and the CLI).
ENTRY_POINTS = ("pipelines.workflow", "pipelines.cli")
LAYERS = ("dwsfusion", "data_prep", "pipelines (stages)", "tune", "workflow and CLI")


def layer(module: str) -> int:
    top = module.split(".")[0]
    if module in ENTRY_POINTS:
        return 4
    return {"dwsfusion": 0, "data_prep": 1, "pipelines": 2, "tune": 3}[top]


def _modules(packages: tuple[str, ...]) -> dict[str, Path]:
    root = Path(dwsfusion.__file__).parent.parent
    names = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line}, anywhere in its source (function-level
    imports too: they hide a circle as well as they hide a cost)."""
    names = _modules(packages)
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges |= {t: node.lineno for t in targets if t in names and t != name}
        graph[name] = edges
    return graph


def _circle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path, name, target]
            if target not in state and (found := visit(target, [*path, name])):
                return found
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [])):
            return found
    return None


def test_the_project_has_no_import_circle():
    graph = _imports()
    assert "dwsfusion.evaluate" in graph["dwsfusion.compare"] and "dwsfusion.fuse" in graph["dwsfusion.evaluate"]
    circle = _circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_a_circle_is_found():
    assert _circle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b": 1}, "b": {}, "c": {"a": 3}}) is None


def test_every_import_arrow_points_down():
    """dwsfusion <- data_prep <- the stages <- tune <- the workflow and the CLI (docs/architecture.md)."""
    graph = _imports()
    assert layer("pipelines.cli") > layer("tune") > layer("pipelines.batch.run") > layer("data_prep.storage")
    upward = [
        f"{module}:{line} imports {target} ({LAYERS[layer(module)]} -> {LAYERS[layer(target)]})"
        for module, edges in graph.items()
        for target, line in edges.items()
        if layer(target) > layer(module)
    ]
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def _function_level_imports(packages: tuple[str, ...]) -> list[tuple[str, int, str, bool]]:
    """(module, line, imported module, its group carries a comment) of every import inside a
    function. A group is a run of consecutive import statements; its comment is on the first
    one or on the line above it."""
    found = []
    for name, path in _modules(packages).items():
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                first = node.lineno
                while first > 1 and lines[first - 2].strip().startswith(("import ", "from ")):
                    first -= 1  # the group's first statement
                said = "#" in lines[first - 1] or lines[first - 2].strip().startswith("#")  # on it, or above it
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level:  # relative: a module of the project
                    modules = ["." * node.level + (node.module or "")]
                found += [(name, node.lineno, module, said) for module in modules]
    return sorted(set(found))


def test_function_level_imports_are_few_and_each_says_why():
    """Imports inside functions only keep a heavy optional import (Ray, MLflow, matplotlib, the
    ONNX exporter; torch in the pyfunc) off a light path, each group with a comment saying so;
    at most 15 of them import a project module in pipelines/ and tune/."""
    everywhere = _function_level_imports(("data_prep", "pipelines", "tune"))
    silent = [f"{m}:{line} {target}" for m, line, target, said in everywhere if not said]
    assert not silent, "function-level imports without a comment saying why:\n" + "\n".join(silent)
    project = [
        (m, line)
        for m, line, target, _ in everywhere
        if m.split(".")[0] in ("pipelines", "tune") and (target.startswith(".") or target.split(".")[0] in PACKAGES)
    ]
    assert len(set(project)) <= 15, project


def test_no_function_outside_the_model_is_longer_than_80_lines():
    """Long functions read as several jobs; the model's modules follow the paper's layout."""
    root = Path(dwsfusion.__file__).parent.parent
    too_long = []
    for folder in (*PACKAGES, "benchmarks", "examples"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.is_relative_to(root / "dwsfusion" / "model"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 80:
                        too_long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long, "\n".join(too_long)


def test_every_benchmark_times_with_the_one_harness():
    """benchmarks/common.py's Stopwatch and timed are the only clock (gpu_bundle.py packages,
    it does not benchmark)."""
    folder = Path(dwsfusion.__file__).parent.parent / "benchmarks"
    own_clocks = [
        path.name
        for path in sorted(folder.glob("*.py"))
        if path.name not in ("common.py", "gpu_bundle.py") and "perf_counter" in path.read_text()
    ]
    assert not own_clocks, own_clocks
