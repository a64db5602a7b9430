"""Shared fixtures. ``SHARED`` is the team's data folder beside the checkout (or
$DWSFUSION_SHARED); tests that need it skip cleanly where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("DWSFUSION_SHARED", Path(__file__).resolve().parents[2] / "shared"))
OFFICIAL_WEIGHTS = SHARED / "official" / "dwsfusion_official_generator.pth"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    from dwsfusion.samples import write_samples

    return write_samples(tmp_path_factory.mktemp("samples"), count=3, seed=0)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    from dwsfusion.checkpoints import save_generator
    from dwsfusion.model import Generator

    torch.manual_seed(0)
    return save_generator(Generator().eval(), tmp_path_factory.mktemp("ckpt") / "random.pt")


class _MeanGraph(torch.nn.Module):
    """A stand-in with an export's inputs and output (dwsfusion.export): the mean of the sources."""

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return (ir + vis) / 2


@pytest.fixture(scope="session")
def mean_onnx(tmp_path_factory) -> Path:
    """An ONNX file the onnxruntime engine runs as it runs an export, in a second rather than the
    real export's minute and a half: what tests of the engine's plumbing fuse with."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    program = torch.onnx.export(
        _MeanGraph().eval(),
        (torch.rand(2, 1, 20, 30), torch.rand(2, 1, 20, 30)),
        dynamo=True,
        input_names=["ir", "vis"],
        output_names=["fused"],
        dynamic_shapes={"ir": dims, "vis": dims},
        verbose=False,
    )
    path = tmp_path_factory.mktemp("onnx") / "mean.onnx"
    program.save(str(path))
    return path


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path
