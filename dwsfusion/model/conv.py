"""3x3 / 1x1 convolutions laid out for speed on the CPU; same maths, same parameters.

DWSFusion's convolutions have 1 to 16 channels at full resolution. oneDNN (PyTorch's CPU
backend) runs such narrow convolutions far below its speed in the channels-last layout, and a
single input channel slowest of all (measured, 16 x 240 x 240, forward + backward: 1->4
channels 118 ms plain vs 16 ms as below; 2->3 channels 124 ms vs 12 ms). So on the CPU every
convolution here runs channels-last, with a one-channel input given a second, zero channel
(and the weight a zero slice): the added products are exact zeros, so the result is the same
up to float summation order. The output is returned in the default layout, which the
elementwise, FFT and batched-matmul code around it expects (measured faster overall than
letting channels-last propagate). A forward pass without autograd (fusion, validation) is the
exception: there the plain layout's 3x3 kernels are faster for these shapes, so they run plain.
On CUDA, cuDNN handles these shapes, and nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Read at call time: a benchmark or test sets it False to time or check the plain path.
CPU_CHANNELS_LAST = True


def exporting() -> bool:
    """True while torch.export traces the model (``dwsfusion export``): the model then takes the
    paths a graph for any image size can hold. (torch < 2.6 has no such flag: never exporting.)"""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` (zero padding, no dilation), channels-last on the CPU."""
    if x.device.type != "cpu" or not CPU_CHANNELS_LAST or x.dim() != 4 or groups != 1:
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if not torch.is_grad_enabled() and weight.shape[-1] > 1:
        # Forward alone (fusion): oneDNN's plain-layout 3x3 kernels beat the channels-last round
        # trip for these widths (measured, 640x480, 1 -> 10 channels 1.7 vs 3.0 ms, 4 -> 8 2.7 vs
        # 3.1 ms); a 1x1 convolution stays channels-last (2 -> 4: 1.5 vs 15 ms plain).
        return F.conv2d(x, weight, bias, stride, padding)
    if x.shape[1] == 1:  # (B, 1, H, W) -> (B, 2, H, W) with a zero channel; weight to match
        x = torch.cat((x, torch.zeros_like(x)), dim=1)
        weight = torch.cat((weight, torch.zeros_like(weight)), dim=1)
    out = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, stride, padding)
    return _to_default_layout(out)


def _to_default_layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last (B, C, H, W) -> the default layout, as ``x.contiguous()`` but as one
    (B, H*W, C) -> (B, C, H*W) batched transpose, which PyTorch's CPU copy runs faster for
    these narrow tensors (measured, one thread, 8 x 10 x 176 x 176: 7.8 ms -> 3.2 ms)."""
    if x.is_contiguous():
        return x
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view of the channels-last storage
    return rows.transpose(1, 2).contiguous().view(b, c, h, w)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) that runs through ``conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or self.dilation != (1, 1) or isinstance(self.padding, str):
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)
