"""The generator as an MLflow pyfunc model that fuses any image size, and serves anywhere.

MLflow 3's default PyTorch flavour exports with torch.export, which needs an input example
and can freeze the input size. This pyfunc instead ships our checkpoint file as an artifact
and rebuilds the generator from it with ``torch.load(weights_only=True)``: any H x W works.
The model is logged from code (``mlflow_model_code.py``) with the ``dwsfusion`` library's
code beside it, so its requirements are public packages only (torch, NumPy, OpenCV, ...):
``mlflow models serve -m models:/NAME@ALIAS`` can build its environment where this project
is not on any package index.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import dwsfusion

SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "ir"), TensorSpec(np.dtype(np.float32), (-1, -1), "vi")]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "fused")]),
)
# What the shipped library imports when the model loads and fuses (tested in a fresh process);
# onnxruntime for the ONNX file ``dwsfusion export --model`` may attach later (engine onnxruntime).
LIBRARY_REQUIREMENTS = ("numpy", "opencv-python-headless", "pillow", "tqdm", "pytorch-msssim", "onnxruntime")


def log_generator(checkpoint_path: str, name: str = "generator") -> str:
    """Log a generator checkpoint (ours or the release's) as a pyfunc model in the active run.
    Returns the model URI."""
    with warnings.catch_warnings():  # MLflow's advice to give an input example: we give a signature
        warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("mlflow_model_code.py")),  # from code: no pickle
            artifacts={"checkpoint": str(checkpoint_path)},
            code_paths=[str(Path(dwsfusion.__file__).parent)],  # the library travels with the model
            signature=SIGNATURE,
            pip_requirements=requirements(),
        )
    return info.model_uri


def requirements() -> list[str]:
    """The model's environment: the torch it was trained with, the library's own dependencies
    and MLflow. Stated, not inferred (MLflow's inference takes seconds per model and left
    torch and OpenCV out)."""
    return [f"torch=={torch.__version__.split('+')[0]}", *LIBRARY_REQUIREMENTS, f"mlflow=={mlflow.__version__}"]
