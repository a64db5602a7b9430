"""Export a generator to ONNX for any image size, and check the export against PyTorch.

The graph is ``Generator.fuse``'s fused image: inputs ``ir`` and ``vis`` (B, 1, H, W) float32
luma in [0, 1], batch, height and width dynamic. Colour is not in the graph: a colour VIS image
is fused on its luma and recoloured with its chroma, as ``dwsfusion fuse`` does (the engine
only replaces the forward pass). While exporting, the model takes the paths a graph for any
size can hold (``torch.compiler.is_exporting``):

- the FFT band split builds its low-pass boxes in the graph from the input's size, and takes
  the release's own formula Re(ifft2(fft2(x) * box)) (ONNX ``DFT``);
- the per-pixel dilation samples with ``grid_sample`` (ONNX ``GridSample``), since the CPU
  slice path branches on the dilations' values;
- the weight nets always resize their up-sampled map (an identity where sizes agree).

Each is the same function as the default path, tested equal (tests/unit/test_export.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from tqdm import tqdm

from . import __version__
from .color import quantize
from .files import atomic_path
from .fuse import fuse_luma_batch
from .model import Generator
from .onnx_engine import INPUTS, OUTPUT, OnnxFuser
from .samples import make_scene

OPSET = 20  # DFT with a dynamic length input, GridSample
EXAMPLE_SHAPE = (2, 1, 75, 109)  # odd, unequal sides and a batch of 2: no size is specialised
MIN_SIDE = 16  # two 4x poolings in each weight net


class FuseGraph(nn.Module):
    """(ir, vis) -> fused: the part of the generator an export holds."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) x2 -> (B, 1, H, W)
        return self.generator.fuse(ir, vis)[0]


def export_graph(generator: Generator, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """``generator`` (on the CPU, eval mode) as a checked ONNX graph for any B, H, W, with
    ``metadata`` in it."""
    graph = FuseGraph(generator.cpu()).eval()
    example = tuple(torch.rand(EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1))
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=MIN_SIDE),
        3: torch.export.Dim("width", min=MIN_SIDE),
    }
    with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes={name: dims for name in INPUTS},
            opset_version=OPSET,
            verbose=False,
        )
    model = program.model_proto
    for key, value in {"producer": f"dwsfusion {__version__}", **(metadata or {})}.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model)
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` under a temporary name, renamed when complete."""
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)
    return Path(path)


def export_onnx(generator: Generator, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``export_graph`` written to ``path``."""
    return save_onnx(export_graph(generator, metadata), path)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's notes (torchvision absent, deprecations inside torch, how it names the
    dynamic axes) are not the user's to act on: errors only, while it runs."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@dataclass
class Parity:
    """The exported graph against the PyTorch path on the same pairs, as written images."""

    pairs: int
    max_abs: float  # largest difference of the fused luma in [0, 1]
    max_grey_levels: int  # largest difference after 8-bit truncation, as dwsfusion fuse writes
    pixels_differing: int  # pixels whose 8-bit value differs
    sources: str

    def passed(self, tolerance: int = 1) -> bool:
        return self.max_grey_levels <= tolerance

    def line(self) -> str:
        return (
            f"parity on {self.pairs} pair(s) ({self.sources}): at most {self.max_grey_levels} grey level(s) "
            f"({self.pixels_differing} pixel(s) differ), largest float difference {self.max_abs:.2e}"
        )


def sample_planes(count: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded generated scenes of several sizes, odd ones included: (ir, vis) luma in [0, 1]."""
    rng = np.random.default_rng(seed)
    sizes = [(97, 131), (240, 320), (181, 203), (480, 640)][:count]
    planes = []
    for h, w in sizes:
        ir, vi = make_scene(rng, h, w)
        planes.append((ir.astype(np.float32) / 255, vi.mean(-1).astype(np.float32) / 255))
    return planes


def check_parity(
    generator: Generator,
    fuser: OnnxFuser,
    planes: list[tuple[np.ndarray, np.ndarray]],
    sources: str,
    progress: bool = False,
) -> Parity:
    """Fuse each (ir, vis) pair with both and compare the floats and the 8-bit images."""
    max_abs, max_levels, differing = 0.0, 0, 0
    for ir, vis in tqdm(planes, desc="parity", unit="pair", disable=not progress):
        reference = fuse_luma_batch(generator, ir[None], vis[None])[0]
        exported = fuser(ir[None], vis[None])[0]
        max_abs = max(max_abs, float(np.abs(reference - exported).max()))
        a, b = quantize(reference).astype(np.int16), quantize(exported).astype(np.int16)
        max_levels = max(max_levels, int(np.abs(a - b).max()))
        differing += int((a != b).sum())
    return Parity(len(planes), max_abs, max_levels, differing, sources)
