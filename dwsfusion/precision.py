"""The one precision switch: fp32, or bf16 / fp16 autocast (fusion, tiles and training alike)."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"fp32": None, "off": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # "off": training's name


def autocast(device: torch.device | str, precision: str = "fp32"):
    """No autocast for fp32 (or training's "off"), else bf16 / fp16 autocast on ``device``'s type."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)
