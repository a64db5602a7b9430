"""dwsfusion/ is the pure library: importing every module must not pull in Ray, MLflow or
pydantic (a GPU machine with only torch, NumPy and OpenCV runs it)."""

import pkgutil
import subprocess
import sys

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
