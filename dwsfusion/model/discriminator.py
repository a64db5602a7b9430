"""Discriminator (critic) for WGAN-GP; two instances judge against IR and against VIS Y.

The release creates its final linear layer anew in every forward pass (random, never
trained, sized by the patch). We use a trained, size-independent head instead:
global average pool + linear 16 -> 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv2d


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        widths = (1, 4, 8, 16)
        self.convs = nn.ModuleList(Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:], strict=False))
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for b in widths[1:])
        self.head = nn.Linear(widths[-1], 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 16, H/8, W/8)
        for conv, bn in zip(self.convs, self.bns, strict=True):
            x = F.avg_pool2d(F.relu(bn(conv(x))), 2)  # three times
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1)
        return self.head(self.features(x).mean(dim=(-2, -1)))
