"""CBAM: channel attention then spatial attention (whose conv is an adaptive dilated conv)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adaptive_conv import AdaptiveDilatedConv

CHANNEL_REDUCTION = 16


class ChannelAttention(nn.Module):
    """Shared MLP over avg- and max-pooled features, hidden width max(c // 16, min_hidden).

    The release uses c // 16, which is 0 for every c in DWSFusion: its MLP outputs zeros and
    the attention is the constant sigmoid(0) = 0.5. With ``min_hidden=0`` we reproduce that
    exactly, without parameters; ``min_hidden >= 1`` gives a working MLP for new training.
    """

    def __init__(self, channels: int, min_hidden: int = 0):
        super().__init__()
        self.hidden = max(channels // CHANNEL_REDUCTION, min_hidden)
        if self.hidden > 0:
            self.fc1 = nn.Linear(channels, self.hidden, bias=False)
            self.fc2 = nn.Linear(self.hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        if self.hidden == 0:
            return x * 0.5
        avg = self.fc2(F.relu(self.fc1(x.mean(dim=(-2, -1)))))
        peak = self.fc2(F.relu(self.fc1(x.amax(dim=(-2, -1)))))
        return x * torch.sigmoid(avg + peak)[:, :, None, None]


class SpatialAttention(nn.Module):
    """concat(channel mean, channel max) -> FADC 2->1 (no bias) -> sigmoid -> multiply."""

    def __init__(self):
        super().__init__()
        self.conv = AdaptiveDilatedConv(2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # mean and max of one channel are that channel: the FADC folds its two inputs
            return x * torch.sigmoid(self.conv(x))
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int, channel_min_hidden: int = 0):
        super().__init__()
        self.channel = ChannelAttention(channels, channel_min_hidden)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
