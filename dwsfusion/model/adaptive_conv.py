"""Frequency-adaptive dilated convolution (FADC), 3x3, in plain PyTorch.

The release builds this on mmcv's compiled modulated deformable convolution; here the
sampling is one ``grid_sample`` call over the eight off-centre taps, so the package needs
no compiled extension. Three parts, each a module:

- ``FrequencySelection``: re-weights FFT box bands of the input per pixel.
- ``OmniAttention``: channel and filter gates from the globally pooled input.
- ``AdaptiveDilatedConv``: per-sample kernel (DC part and high part gated separately),
  per-pixel dilation ``1 + |offset|`` and a per-tap mask (DCNv2 semantics).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

FREQ_FACTORS = (2, 4, 8)
OMNI_HIDDEN = 16  # max(int(in * 0.0625), 16) is 16 for every width in this network
# Tap directions d_k in row-major order, (dy, dx); the centre tap is index 4.
TAP_DIRECTIONS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
CENTRE_TAP = 4
# Up to this many distinct integer dilations the exact slice path runs; beyond, grid_sample.
# Read at call time, so a benchmark can set it to 0 to time the general path.
MAX_SLICE_LEVELS = 4
OFF_CENTRE_TAPS = tuple(k for k, d in enumerate(TAP_DIRECTIONS) if d != (0, 0))


def _band_limits(size: int, factor: int) -> tuple[int, int]:
    """Centred box of the shifted spectrum kept by the low-pass, as the release computes it
    (Python's round-half-even on floats, exclusive end)."""
    return round(size / 2 - size / (2 * factor)), round(size / 2 + size / (2 * factor))


@functools.lru_cache(maxsize=64)
def _rfft_band_mask(h: int, w: int, factor: int) -> torch.Tensor:
    """The release's low-pass box as a mask on ``rfft2`` coefficients, (H, C) with C <= W//2+1:
    trimmed after its last non-zero column (a narrower inverse transform).

    The release takes Re(ifft2(X * box)) with X the full spectrum of a real input. Since
    X(-k) = conj(X(k)), that equals irfft2 of X times the symmetrised box (box(k) + box(-k))/2,
    at half the transform cost. (The box is not symmetric for even sizes.)
    """
    r0, r1 = _band_limits(h, factor)
    c0, c1 = _band_limits(w, factor)
    box = torch.zeros(h, w, dtype=torch.float64)
    box[r0:r1, c0:c1] = 1
    box = torch.fft.ifftshift(box)  # back to unshifted frequency order
    mirrored = torch.roll(torch.flip(box, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # box(-k)
    mask = ((box + mirrored) / 2)[:, : w // 2 + 1]
    used = torch.nonzero(mask.any(dim=0)).flatten()
    columns = int(used.max()) + 1 if used.numel() else 0
    return mask[:, :columns].float().contiguous()


class FrequencySelection(nn.Module):
    """x -> sum_f 2*sigmoid(gate_f(x)) * band_f(x) + lowest band. Identity at init."""

    def __init__(self, channels: int, factors: tuple[int, ...] = FREQ_FACTORS):
        super().__init__()
        self.factors = factors
        self.gates = nn.ModuleList(nn.Conv2d(channels, 1, 3, padding=1) for _ in factors)
        for gate in self.gates:  # zero init: every gate is 2*sigmoid(0) = 1
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        h, w = x.shape[-2:]
        # All gates in one convolution: (B, n_bands, H, W).
        weights = torch.cat([g.weight for g in self.gates])
        biases = torch.cat([g.bias for g in self.gates])
        gains = 2 * torch.sigmoid(F.conv2d(x, weights, biases, padding=1))
        masks = [_rfft_band_mask(h, w, f).to(x.device) for f in self.factors]
        # rfft2 as rfft along W, then an FFT along H of the columns some band keeps only.
        kept = max(m.shape[1] for m in masks)
        spectrum = torch.fft.fft(torch.fft.rfft(x.float(), dim=-1)[..., :kept], dim=-2)
        out, previous = None, x
        for i, mask in enumerate(masks):
            if mask.shape[1] == 0:  # the box is empty at this size: no low band
                low = torch.zeros_like(x)
            else:
                columns = mask.shape[1]
                low = torch.fft.ifft(spectrum[..., :columns] * mask, dim=-2)
                low = torch.fft.irfft(low, n=w, dim=-1).to(x.dtype)  # zero-pads the columns
            band = gains[:, i : i + 1] * (previous - low)
            out = band if out is None else out + band
            previous = low
        return out + previous


class OmniAttention(nn.Module):
    """Global pool -> 1x1 squeeze to 16 -> BN -> ReLU -> channel gate (in) and filter gate (out)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, OMNI_HIDDEN, 1, bias=False)
        self.bn = nn.BatchNorm2d(OMNI_HIDDEN)
        self.channel_gate = nn.Conv2d(OMNI_HIDDEN, in_channels, 1)
        self.filter_gate = nn.Conv2d(OMNI_HIDDEN, out_channels, 1)
        for conv in (self.squeeze, self.channel_gate, self.filter_gate):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.relu(self.bn(self.squeeze(x.mean(dim=(-2, -1), keepdim=True))))  # (B, 16, 1, 1)
        channel = torch.sigmoid(self.channel_gate(z)).flatten(1)  # (B, in)
        filters = torch.sigmoid(self.filter_gate(z)).flatten(1)  # (B, out)
        return channel, filters


def _sampling_grid_conv2d(
    x_padded: torch.Tensor, dilation: torch.Tensor, mask: torch.Tensor, kernel: torch.Tensor
) -> torch.Tensor:
    """General path (any dilation): one ``grid_sample`` over the eight off-centre taps."""
    b, c_in, hp, wp = x_padded.shape
    h, w = hp - 2, wp - 2
    c_out = kernel.shape[1]
    ys = torch.arange(1, h + 1, device=x_padded.device, dtype=x_padded.dtype).view(1, 1, h, 1)
    xs = torch.arange(1, w + 1, device=x_padded.device, dtype=x_padded.dtype).view(1, 1, 1, w)
    dirs = torch.tensor([TAP_DIRECTIONS[k] for k in OFF_CENTRE_TAPS], device=x_padded.device, dtype=x_padded.dtype)
    dy, dx = dirs[:, 0].view(1, 8, 1, 1), dirs[:, 1].view(1, 8, 1, 1)
    # grid_sample with align_corners=True maps -1/+1 to the first/last pixel centre.
    grid_y = (ys + dilation * dy) * (2.0 / (hp - 1)) - 1.0  # (B, 8, H, W)
    grid_x = (xs + dilation * dx) * (2.0 / (wp - 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1).view(b, 8 * h, w, 2)
    sampled = F.grid_sample(x_padded, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.view(b, c_in, 8, h, w)
    centre = x_padded[:, :, 1:-1, 1:-1].unsqueeze(2)  # (B, Cin, 1, H, W)
    columns = torch.cat((sampled[:, :, :4], centre, sampled[:, :, 4:]), dim=2) * mask.unsqueeze(1)
    out = torch.bmm(kernel.reshape(b, c_out, c_in * 9), columns.reshape(b, c_in * 9, h * w))
    return out.view(b, c_out, h, w)


def adaptive_dilated_conv2d(
    x_padded: torch.Tensor,
    dilation: torch.Tensor,
    mask: torch.Tensor,
    kernel: torch.Tensor,
    max_levels: int | None = None,
) -> torch.Tensor:
    """Modulated deformable 3x3 convolution whose offsets are a per-pixel dilation.

    x_padded: (B, Cin, H+2, W+2), already padded by one pixel.
    dilation: (B, 1, H, W), >= 1: tap k at p samples p + dilation(p) * d_k.
    mask:     (B, 9, H, W), per-tap modulation.
    kernel:   (B, Cout, Cin, 9), per-sample weights.
    Returns   (B, Cout, H, W). Samples are bilinear, zero outside x_padded (as DCNv2).

    Since every tap of a pixel shares one dilation s = n + f, a tap in direction +1 reads
    rows p+n, p+n+1 with weights 1-f, f, and in direction -1 rows p-n-1, p-n with f, 1-f.
    For each distinct integer part n (one or two in trained models) that is a handful of
    shifted slices times weight maps: exact positions and no gather. Beyond ``max_levels``
    distinct n (``MAX_SLICE_LEVELS``), the general grid_sample path runs instead.
    """
    b, c_in, hp, wp = x_padded.shape
    h, w = hp - 2, wp - 2
    c_out = kernel.shape[1]
    whole = torch.floor(dilation).detach()
    low, high = int(whole.min()), int(whole.max())  # two reductions; unique() would sort
    levels = list(range(low, high + 1))
    if len(levels) > (MAX_SLICE_LEVELS if max_levels is None else max_levels):
        return _sampling_grid_conv2d(x_padded, dilation, mask, kernel)
    frac = dilation - whole  # carries the gradient to the offsets
    mix_first = c_out < c_in  # sample Cout pre-mixed planes per tap instead of Cin inputs
    margin = int(max(levels)) + 1  # zeros beyond the padded input, as DCNv2 samples them
    source = F.pad(x_padded, (margin, margin, margin, margin))
    hs, ws = hp + 2 * margin, wp + 2 * margin
    origin = margin + 1  # index of output pixel (0, 0) in ``source``
    if mix_first:  # (B, 9*Cout, Cin) @ (B, Cin, Hs*Ws) -> (B, 9, Cout, Hs, Ws); zeros stay zero
        mixed = torch.bmm(kernel.permute(0, 3, 1, 2).reshape(b, 9 * c_out, c_in), source.reshape(b, c_in, hs * ws))
        source = mixed.view(b, 9, c_out, hs, ws)
        out = x_padded.new_zeros(b, c_out, h, w)
    else:
        columns = x_padded.new_zeros(b, c_in, 9, h, w)

    def window(k: int, oy: int, ox: int) -> torch.Tensor:  # (B, C, H, W) read at offset (oy, ox)
        plane = source[:, k] if mix_first else source
        return plane[:, :, origin + oy : origin + oy + h, origin + ox : origin + ox + w]

    def add_tap(k: int, value: torch.Tensor) -> None:  # value already bilinear-weighted
        if mix_first:
            out.addcmul_(value, mask[:, k : k + 1])
        else:
            columns[:, :, k].add_(value)

    add_tap(CENTRE_TAP, window(CENTRE_TAP, 0, 0))  # independent of the dilation
    for level in levels:
        n, here = int(level), (whole == level).to(frac.dtype) if len(levels) > 1 else 1.0
        near, far = (1 - frac) * here, frac * here  # weights of the nearer and farther row
        # Diagonal taps read with products of two one-axis weights (here * here == here).
        products = {(0, 0): near * near, (0, 1): near * far, (1, 1): far * far}
        axis_weight = (near, far)
        # Per direction: (integer offset, which weight) of the two rows/columns it reads.
        reads = {1: ((n, 0), (n + 1, 1)), -1: ((-n - 1, 1), (-n, 0)), 0: ((0, None),)}
        for k in OFF_CENTRE_TAPS:
            dy, dx = TAP_DIRECTIONS[k]
            value = None  # the tap's bilinear sample: two reads on an axis, four on a diagonal
            for oy, wy in reads[dy]:
                for ox, wx in reads[dx]:
                    if wy is None or wx is None:
                        weight = axis_weight[wx if wy is None else wy]
                    else:
                        weight = products[(min(wy, wx), max(wy, wx))]
                    if value is None:
                        value = window(k, oy, ox) * weight
                    else:
                        value.addcmul_(window(k, oy, ox), weight)
            add_tap(k, value)
    if mix_first:
        return out
    columns.mul_(mask.unsqueeze(1))  # (B, Cin, 9, H, W) * (B, 1, 9, H, W)
    return torch.bmm(kernel.reshape(b, c_out, c_in * 9), columns.reshape(b, c_in * 9, h * w)).view(b, c_out, h, w)


class AdaptiveDilatedConv(nn.Module):
    """3x3 FADC: frequency selection -> kernel modulation -> adaptive dilation + mask."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, offset_eps: float = 1e-4):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.uniform_(self.weight, -1 / (in_channels * 9) ** 0.5, 1 / (in_channels * 9) ** 0.5)
        self.freq_select = FrequencySelection(in_channels)
        self.omni_low = OmniAttention(in_channels, out_channels)  # gates the kernel's DC part
        self.omni_high = OmniAttention(in_channels, out_channels)  # gates the rest
        self.offset_conv = nn.Conv2d(in_channels, 1, 3)
        self.mask_conv = nn.Conv2d(in_channels, 9, 3)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.constant_(self.offset_conv.bias, offset_eps)
        nn.init.zeros_(self.mask_conv.weight)
        nn.init.zeros_(self.mask_conv.bias)

    def modulated_kernel(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, Cout, Cin, 9)
        ch_low, filt_low = self.omni_low(x)
        ch_high, filt_high = self.omni_high(x)
        weight = self.weight.flatten(2)  # (Cout, Cin, 9)
        mean = weight.mean(dim=-1, keepdim=True)
        low_gain = (2 * ch_low[:, None, :]) * (2 * filt_low[:, :, None])  # (B, Cout, Cin)
        high_gain = (2 * ch_high[:, None, :]) * (2 * filt_high[:, :, None])
        return mean * low_gain.unsqueeze(-1) + (weight - mean) * high_gain.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        x = self.freq_select(x)
        kernel = self.modulated_kernel(x)
        x_padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        # Offset and mask convolutions in one call: (B, 1 + 9, H, W).
        weights = torch.cat((self.offset_conv.weight, self.mask_conv.weight))
        biases = torch.cat((self.offset_conv.bias, self.mask_conv.bias))
        offset_mask = F.conv2d(x_padded, weights, biases)
        dilation = 1 + offset_mask[:, :1].abs()  # (B, 1, H, W)
        mask = torch.sigmoid(offset_mask[:, 1:])  # (B, 9, H, W)
        out = adaptive_dilated_conv2d(x_padded, dilation, mask, kernel)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out
