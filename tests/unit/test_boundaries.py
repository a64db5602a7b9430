"""dwsfusion/ is the pure library: importing every module must not pull in Ray, MLflow or
pydantic (a GPU machine with only torch, NumPy and OpenCV runs it)."""

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


def _library_imports() -> dict[str, set[str]]:
    """dwsfusion module -> the dwsfusion modules it imports anywhere in its source (function-level
    imports too: they hide a circle as well as they hide a cost)."""
    import ast
    from pathlib import Path

    root = Path(dwsfusion.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
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
            edges |= {t for t in targets if t in names and t != name}
        graph[name] = edges
    return graph


def test_the_library_has_no_import_circle():
    graph = _library_imports()
    assert "dwsfusion.evaluate" in graph["dwsfusion.compare"] and "dwsfusion.fuse" in graph["dwsfusion.evaluate"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            assert state.get(target) != 1, "import circle: " + " -> ".join([*path, name, target])
            if target not in state:
                visit(target, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


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
