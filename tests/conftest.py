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


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path
