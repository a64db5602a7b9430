"""Run an exported generator (``dwsfusion export``) with ONNX Runtime: no PyTorch imported.

The graph takes ``ir`` and ``vis``, (B, 1, H, W) float32 luma in [0, 1], any B, H and W, and
returns ``fused`` of the same shape: ``Generator.fuse``'s first output. This module imports
NumPy only, so a served model or a fusion worker can run it where torch is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UsageError

ENGINES = ("torch", "onnxruntime")
ONNX_SUFFIX = ".onnx"
INPUTS, OUTPUT = ("ir", "vis"), "fused"
ATTACHED_ONNX = "generator.onnx"  # its name beside a registered model's weights (pipelines.registry.attach_onnx)


class OnnxFuser:
    """An exported generator on ONNX Runtime's CPU (or, where installed, GPU) provider:
    ``fuser(irs, vis)``, (N, H, W) float32 luma in [0, 1] -> fused (N, H, W) float32."""

    device = "cpu"  # where scores of its images are computed (dwsfusion.evaluate): its outputs are NumPy

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:  # here, not at the top: fusion with torch never pays for importing it
            import onnxruntime as ort
        except ImportError:  # a served model's environment may lack it
            raise UsageError("the onnxruntime engine needs ONNX Runtime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file (write one with dwsfusion export)")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its constant folder warns about CastLike nodes it skips
        if threads:
            options.intra_op_num_threads = threads
        providers = [p for p in ort.get_available_providers() if p in ("CUDAExecutionProvider", "CPUExecutionProvider")]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad file for the user
            raise UsageError(f"{self.path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS:
            raise UsageError(f"{self.path}: inputs {names}; a DWSFusion export has {INPUTS}")

    def __call__(self, irs: np.ndarray, vis: np.ndarray) -> np.ndarray:
        planes = (np.ascontiguousarray(x, dtype=np.float32)[:, None] for x in (irs, vis))  # (N, 1, H, W)
        feed = dict(zip(INPUTS, planes, strict=True))
        return self.session.run([OUTPUT], feed)[0][:, 0]

    def metadata(self) -> dict[str, str]:
        """What ``dwsfusion export`` wrote into the file: source, version, parity."""
        return dict(self.session.get_modelmeta().custom_metadata_map)
