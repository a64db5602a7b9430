"""MLflow "models from code" entry point: MLflow runs this file to build the pyfunc, so the
logged model holds no pickled object, only this file, the weights and the ``dwsfusion``
library's code (logged beside it as ``code_paths``). It imports nothing from ``pipelines``:
a served model needs torch, NumPy and OpenCV, not this project installed.

Input: {"ir": (H, W) float32, "vi": (H, W) float32} luma in [0, 1] (or (B, H, W));
output: the fused luma, same shape. Large images are fused in tiles (PyTorch).

Engines: the model config's ``engine`` (``mlflow.pyfunc.load_model(uri, model_config={"engine":
...})``): ``torch``, ``onnxruntime`` (the ONNX file ``dwsfusion export --model`` attached beside
the weights; imports no torch), or ``auto`` (the default: torch where it is installed, else
ONNX Runtime).
"""

import importlib.util
from pathlib import Path

import mlflow
import numpy as np


class GeneratorModel(mlflow.pyfunc.PythonModel):
    # The model is logged with a tensor signature; MLflow's type-hint validation of ``predict``
    # (and its warning that there are no hints) does not apply.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        # The library is imported here, per engine: an ONNX Runtime model loads without torch.
        from dwsfusion.onnx_engine import ATTACHED_ONNX, OnnxFuser  # NumPy and ONNX Runtime only

        engine = (context.model_config or {}).get("engine", "auto")
        onnx_file = Path(context.artifacts["checkpoint"]).parent / ATTACHED_ONNX
        if engine == "auto":
            engine = "torch" if importlib.util.find_spec("torch") or not onnx_file.is_file() else "onnxruntime"
        self.engine, self.generator, self.fuser = engine, None, None
        if engine == "onnxruntime":
            if not onnx_file.is_file():
                raise FileNotFoundError(f"this model has no {ATTACHED_ONNX}: attach one with dwsfusion export --model")
            self.fuser = OnnxFuser(onnx_file)
            return
        if engine != "torch":
            raise ValueError(f"engine {engine!r}: choose auto, torch or onnxruntime")
        import torch  # only the torch engine needs it: an ONNX Runtime model loads without

        from dwsfusion.checkpoints import load_generator  # torch: only the torch engine

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.generator = load_generator(context.artifacts["checkpoint"]).to(device)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        ir, vi = np.asarray(model_input["ir"], np.float32), np.asarray(model_input["vi"], np.float32)
        if ir.shape != vi.shape:
            raise ValueError(f"ir {ir.shape} and vi {vi.shape} differ in shape")
        if self.fuser is not None:  # one graph call for a stack of one size
            return self.fuser(ir[None], vi[None])[0] if ir.ndim == 2 else self.fuser(ir, vi)
        from dwsfusion.fuse import fuse_luma  # torch: only the torch engine
        from dwsfusion.tiling import TileConfig

        if ir.ndim == 2:
            return fuse_luma(self.generator, ir, vi, TileConfig())
        return np.stack([fuse_luma(self.generator, a, b, TileConfig()) for a, b in zip(ir, vi, strict=True)])


mlflow.models.set_model(GeneratorModel())
