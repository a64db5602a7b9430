"""DWSFusion generator: alpha estimation, two weight nets, cross-perception, fusion head.

G(ir, vis_y) -> GeneratorOutput(fused, w_ir, w_vi, f_ir, f_vi, ir_weighted, vi_weighted),
every image (B, 1, H, W) in [0, 1]; any H x W (odd sizes too).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .adaptive_conv import AdaptiveDilatedConv
from .attention import CBAM
from .conv import Conv2d, exporting


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture switches. The defaults are the authors' release (loads its weights)."""

    channel_min_hidden: int = 0  # CBAM channel-MLP width floor; 0 = release (constant 0.5 gate)

    def to_dict(self) -> dict:
        return asdict(self)


def _pad_to_even(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))


class Down(nn.Module):
    """Two [pad-to-even, conv3x3, BN, ReLU, maxpool2]; the release shares one BN between them."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, ~H/4, ~W/4)
        x = F.max_pool2d(F.relu(self.bn(self.conv1(_pad_to_even(x)))), 2)
        return F.max_pool2d(F.relu(self.bn(self.conv2(_pad_to_even(x)))), 2)


class Up(nn.Module):
    """Two [transposed conv 2x2 stride 2, BN, ReLU]: x4 in each side."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.deconv2 = nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.deconv1(x)))
        return F.relu(self.bn2(self.deconv2(x)))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Exported for any size, the graph cannot branch on a size: it always resizes (bilinear to
    # the same size, align_corners=False, samples every pixel at its centre: the identity).
    if x.shape[-2:] == like.shape[-2:] and not exporting():
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class WeightNet(nn.Module):
    """Frequency-adaptive attention-based weight estimation: image (B,1,H,W) -> W in (0,1)."""

    def __init__(self, channel_min_hidden: int = 0):
        super().__init__()
        self.down1, self.att1 = Down(1, 4), CBAM(4, channel_min_hidden)
        self.down2, self.att2 = Down(4, 8), CBAM(8, channel_min_hidden)
        self.up1, self.att3 = Up(8, 4), CBAM(4, channel_min_hidden)
        self.up2, self.att4 = Up(8, 1), CBAM(1, channel_min_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quarter = self.att1(self.down1(x))  # (B, 4, H/4, W/4)
        sixteenth = self.att2(self.down2(quarter))  # (B, 8, H/16, W/16)
        up = _resize_to(self.att3(self.up1(sixteenth)), quarter)  # (B, 4, H/4, W/4)
        full = self.att4(self.up2(torch.cat((quarter, up), dim=1)))  # (B, 1, ~H, ~W)
        return torch.sigmoid(_resize_to(full, x) + x)


class AlphaNet(nn.Module):
    """(ir, vis) -> one non-negative scalar per sample, (B, 1, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(2, 4, 3, padding=1)
        self.conv2 = Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 1)

    def features(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:  # -> (B, 8, H, W)
        return F.relu(self.conv2(F.relu(self.conv1(torch.cat((ir, vis), dim=1)))))

    def head(self, mean_features: torch.Tensor) -> torch.Tensor:  # (B, 8) -> (B, 1, 1, 1)
        return F.relu(self.fc(mean_features)).view(-1, 1, 1, 1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ir, vis).mean(dim=(-2, -1)))


class FusionHead(nn.Module):
    """Frequency-adaptive feature fusion: (B,2,H,W) weighted sources -> (B,1,H,W) fused."""

    def __init__(self, channel_min_hidden: int = 0):
        super().__init__()
        self.conv_in = AdaptiveDilatedConv(2, 4)
        self.att = CBAM(4, channel_min_hidden)
        self.skip = Conv2d(2, 4, 1)
        self.conv_out = AdaptiveDilatedConv(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.att(self.conv_in(x)) + self.skip(x)  # (B, 4, H, W)
        return self.conv_out(features).clamp(0.0, 1.0)


class GeneratorOutput(NamedTuple):
    fused: torch.Tensor
    w_ir: torch.Tensor  # weight maps of the sources
    w_vi: torch.Tensor
    f_ir: torch.Tensor  # the same weight nets applied to the fused image
    f_vi: torch.Tensor
    ir_weighted: torch.Tensor
    vi_weighted: torch.Tensor


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = config or GeneratorConfig()
        hidden = self.config.channel_min_hidden
        self.alpha = AlphaNet()
        self.weight_ir = WeightNet(hidden)
        self.weight_vi = WeightNet(hidden)
        self.fusion = FusionHead(hidden)

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The inference path: (fused, w_ir, w_vi, ir_weighted, vi_weighted). ``alpha``
        (B, 1, 1, 1) overrides the AlphaNet's: a tile uses its whole image's (dwsfusion.tiling)."""
        alpha = self.alpha(ir, vis) if alpha is None else alpha  # (B, 1, 1, 1)
        w_ir, w_vi = self.weight_ir(ir), self.weight_vi(vis)
        # Cross-perception: each source is weighted by its own map and the other's complement.
        ir_weighted = ir * (alpha * w_ir + (1 - alpha) * (1 - w_vi))
        vi_weighted = vis * (alpha * w_vi + (1 - alpha) * (1 - w_ir))
        fused = self.fusion(torch.cat((ir_weighted, vi_weighted), dim=1))
        return fused, w_ir, w_vi, ir_weighted, vi_weighted

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> GeneratorOutput:
        fused, w_ir, w_vi, ir_weighted, vi_weighted = self.fuse(ir, vis)
        # Feature-level supervision: the fused image's weight maps, from the same nets.
        f_ir, f_vi = self.weight_ir(fused), self.weight_vi(fused)
        return GeneratorOutput(fused, w_ir, w_vi, f_ir, f_vi, ir_weighted, vi_weighted)
