"""The generator as an MLflow pyfunc model that fuses any image size.

MLflow 3's default PyTorch flavour exports with torch.export, which needs an input example
and can freeze the input size. This pyfunc instead ships our checkpoint file as an artifact
and rebuilds the generator from it with ``torch.load(weights_only=True)``: any H x W works.
Input: {"ir": (H, W) float32, "vi": (H, W) float32} luma in [0, 1] (or (B, H, W));
output: the fused luma, same shape.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "ir"), TensorSpec(np.dtype(np.float32), (-1, -1), "vi")]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "fused")]),
)


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        from dwsfusion.checkpoints import load_generator

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.generator = load_generator(context.artifacts["checkpoint"]).to(device)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from dwsfusion.fuse import fuse_luma
        from dwsfusion.tiling import TileConfig

        ir, vi = np.asarray(model_input["ir"], np.float32), np.asarray(model_input["vi"], np.float32)
        if ir.shape != vi.shape:
            raise ValueError(f"ir {ir.shape} and vi {vi.shape} differ in shape")
        if ir.ndim == 2:
            return fuse_luma(self.generator, ir, vi, TileConfig())
        return np.stack([fuse_luma(self.generator, a, b, TileConfig()) for a, b in zip(ir, vi, strict=True)])


def log_generator(checkpoint_path: str, name: str = "generator") -> str:
    """Log a generator checkpoint (ours or the release's) as a pyfunc model in the active run.
    Returns the model URI."""
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("mlflow_model_code.py")),  # from code: no pickle
        artifacts={"checkpoint": str(checkpoint_path)},
        signature=SIGNATURE,
        pip_requirements=requirements(),
    )
    return info.model_uri


def requirements() -> list[str]:
    """What loading the model needs: this package (which declares the rest) and its torch. Stated,
    not inferred: MLflow's inference takes seconds per model and left torch and OpenCV out."""
    import torch

    import dwsfusion

    return [f"dwsfusion=={dwsfusion.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
