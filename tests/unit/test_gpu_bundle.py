"""benchmarks/gpu_bundle.py's choices, without building a bundle (that downloads): which
packages it pins for the GPU machine, and what it trims from an unpacked site."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
gpu_bundle = pytest.importorskip("gpu_bundle")


def test_the_roots_are_the_project_dependencies_with_mlflow_skinny():
    roots = {r.split("[")[0].split("<")[0].split(">")[0] for r in gpu_bundle.roots()}
    assert {"ray", "pydantic", "tqdm", "mlflow-skinny", "sqlalchemy", "alembic"} <= roots
    assert "mlflow" not in roots


def test_the_closure_pins_what_is_installed_and_leaves_out_what_the_machine_has():
    pytest.importorskip("ray")
    pinned = gpu_bundle.closure(gpu_bundle.roots(), "3.12")
    from importlib import metadata

    assert pinned["ray"] == metadata.version("ray") and pinned["pydantic-core"] == metadata.version("pydantic-core")
    assert "aiohttp" in pinned  # ray[default]'s dashboard: the extras are followed
    assert not {"torch", "numpy", "pandas", "pyarrow", "virtualenv"} & set(pinned)
    assert not any(name.startswith("nvidia-") for name in pinned)


def test_trim_removes_what_nothing_imports(tmp_path):
    for keep in ("ray/_private/worker.py", "ray/dashboard/client/build/index.js"):
        (tmp_path / keep).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / keep).write_text("x")
    for drop in ("ray/jars/ray.jar", "ray/rllib/algo.py", "bin/ray", "ray/dashboard/client/build/a.js.map"):
        (tmp_path / drop).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / drop).write_text("xx")
    assert gpu_bundle.trim(tmp_path) == 8
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["ray/_private/worker.py", "ray/dashboard/client/build/index.js"]
