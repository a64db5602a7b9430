"""Frequency-adaptive dilated convolution (FADC), 3x3, in plain PyTorch.

The release builds this on mmcv's compiled modulated deformable convolution; here it is plain
PyTorch, so the package needs no compiled extension: on the CPU exact shifted slices with a
hand-written backward, elsewhere one ``grid_sample`` call over the eight off-centre taps.
Three parts, each a module:

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

from .conv import Conv2d, conv2d, exporting

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
def _rfft_band_mask(h: int, w: int, factor: int, device: str = "cpu") -> torch.Tensor:
    """The release's low-pass box as a mask on ``rfft2`` coefficients, (H, C) with C <= W//2+1:
    trimmed after its last non-zero column (a narrower inverse transform).

    The release takes Re(ifft2(X * box)) with X the full spectrum of a real input. Since
    X(-k) = conj(X(k)), that equals irfft2 of X times the symmetrised box (box(k) + box(-k))/2,
    at half the transform cost. (The box is not symmetric for even sizes.)
    """
    with torch.inference_mode(False):  # see _off_centre_directions
        return _build_rfft_band_mask(h, w, factor, device)


def _build_rfft_band_mask(h: int, w: int, factor: int, device: str) -> torch.Tensor:
    r0, r1 = _band_limits(h, factor)
    c0, c1 = _band_limits(w, factor)
    box = torch.zeros(h, w, dtype=torch.float64)
    box[r0:r1, c0:c1] = 1
    box = torch.fft.ifftshift(box)  # back to unshifted frequency order
    mirrored = torch.roll(torch.flip(box, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # box(-k)
    mask = ((box + mirrored) / 2)[:, : w // 2 + 1]
    used = torch.nonzero(mask.any(dim=0)).flatten()
    columns = int(used.max()) + 1 if used.numel() else 0
    return mask[:, :columns].float().contiguous().to(device)  # cached per device: no copy per forward


def _for_input(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight`` (Cout, Cin, ...) for input ``x``. A one-channel ``x`` fed to a layer of Cin > 1
    inputs stands for Cin identical channels (CBAM on one channel: its mean and max are the
    same map), so the layer is the sum of its per-channel weights applied once: the same
    result, and each channel's weight gets the same gradient, as it should."""
    if x.shape[1] == weight.shape[1]:
        return weight
    if x.shape[1] != 1:
        raise ValueError(f"input has {x.shape[1]} channels, the layer takes {weight.shape[1]}")
    return weight.sum(dim=1, keepdim=True)


class FrequencySelection(nn.Module):
    """x -> sum_f 2*sigmoid(gate_f(x)) * band_f(x) + lowest band. Identity at init."""

    def __init__(self, channels: int, factors: tuple[int, ...] = FREQ_FACTORS):
        super().__init__()
        self.factors = factors
        self.gates = nn.ModuleList(Conv2d(channels, 1, 3, padding=1) for _ in factors)
        for gate in self.gates:  # zero init: every gate is 2*sigmoid(0) = 1
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)

    def band_gains(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_bands, H, W), highest first
        """Per-pixel gain 2*sigmoid(gate_f(x)) of each band, all gates in one convolution."""
        weights = _for_input(torch.cat([g.weight for g in self.gates]), x)
        biases = torch.cat([g.bias for g in self.gates])
        return 2 * torch.sigmoid(conv2d(x, weights, biases, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same; C = 1: see _for_input
        if exporting():
            return self.forward_any_size(x)
        h, w = x.shape[-2:]
        gains = self.band_gains(x).split(1, dim=1)
        masks = [_rfft_band_mask(h, w, f, str(x.device)) for f in self.factors]
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
            band = gains[i] * (previous - low)
            out = band if out is None else out + band
            previous = low
        return out + previous

    def forward_any_size(self, x: torch.Tensor) -> torch.Tensor:
        """The same bands as the release writes them, Re(ifft2(fft2(x) * box)), with the boxes
        built in the graph from the input's size: what an export for any image size traces
        (``forward``'s masks are cached per size on the host). Equal to ``forward`` up to float
        rounding (tested)."""
        h, w = x.shape[-2:]
        gains = self.band_gains(x).split(1, dim=1)
        spectrum = torch.fft.fft2(x.float())
        out, previous = None, x
        for i, factor in enumerate(self.factors):
            box = _axis_box(h, factor, x.device)[:, None] * _axis_box(w, factor, x.device)[None, :]  # (H, W)
            low = torch.fft.ifft2(spectrum * box).real.to(x.dtype)
            band = gains[i] * (previous - low)
            out = band if out is None else out + band
            previous = low
        return out + previous


def _axis_box(size, factor: int, device: torch.device) -> torch.Tensor:
    """(size,) float 0/1: the release's centred low-pass box (``_band_limits``) along one axis,
    in unshifted frequency order, from tensor arithmetic only (``size`` may be symbolic).
    torch.round is round-half-even, as Python's round in ``_band_limits``."""
    k = torch.arange(size, device=device)
    n = torch.full((), size, dtype=torch.float32, device=device)
    start, end = torch.round(n / 2 - n / (2 * factor)), torch.round(n / 2 + n / (2 * factor))
    shifted = k + size // 2  # fftshift: frequency k sits at (k + size // 2) mod size
    shifted = torch.where(shifted >= size, shifted - size, shifted).float()  # no modulo: it does not export
    return ((shifted >= start) & (shifted < end)).float()


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
        # The 1x1 convolutions of a 1x1 map are matrix products: F.linear on their weights
        # (the same parameters) skips a convolution call per gate, forward and backward.
        z = F.linear(x.mean(dim=(-2, -1)), _for_input(self.squeeze.weight, x).flatten(1))  # (B, 16)
        z = F.relu(self.bn(z[:, :, None, None])).flatten(1)
        channel = torch.sigmoid(F.linear(z, self.channel_gate.weight.flatten(1), self.channel_gate.bias))  # (B, in)
        filters = torch.sigmoid(F.linear(z, self.filter_gate.weight.flatten(1), self.filter_gate.bias))  # (B, out)
        return channel, filters


@functools.lru_cache(maxsize=16)
def _off_centre_directions(device: str, dtype: torch.dtype) -> torch.Tensor:
    """(8, 2) tap directions (dy, dx), made once per device: a tensor built from a Python list
    is a blocking host-to-device copy. Cached tensors are made outside inference mode even when
    the first call is inside it (fusion before training in one process): an inference tensor
    cannot be saved for a later backward."""
    with torch.inference_mode(False):
        return torch.tensor([TAP_DIRECTIONS[k] for k in OFF_CENTRE_TAPS], dtype=dtype).to(device)


def _sampling_grid_conv2d(
    x_padded: torch.Tensor, dilation: torch.Tensor, mask: torch.Tensor, kernel: torch.Tensor
) -> torch.Tensor:
    """General path (any dilation): one ``grid_sample`` over the eight off-centre taps."""
    b, c_in, hp, wp = x_padded.shape
    h, w = hp - 2, wp - 2
    c_out = kernel.shape[1]
    # Positions and samples in float32 (at least), also for a half-precision input (a model
    # cast with .bfloat16()): bf16 keeps 8 significant bits, so a coordinate of 500 would round
    # to a multiple of 4 and the dilation's fraction would be lost. (Under autocast the input
    # is mostly float32 already: the frequency selection's sum promotes it.)
    dtype = torch.promote_types(x_padded.dtype, torch.float32)
    x_padded = x_padded.to(dtype)
    ys = torch.arange(1, h + 1, device=x_padded.device, dtype=dtype).view(1, 1, h, 1)
    xs = torch.arange(1, w + 1, device=x_padded.device, dtype=dtype).view(1, 1, 1, w)
    dirs = _off_centre_directions(str(x_padded.device), dtype)
    dy, dx = dirs[:, 0].view(1, 8, 1, 1), dirs[:, 1].view(1, 8, 1, 1)
    dilation = dilation.to(dtype)
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


# The bilinear weights a tap's reads use, per integer level: index into the (B, L, 5, H, W)
# stack built by ``_read_weights``. Axis taps read two pixels (NEAR, FAR), diagonal taps four
# (products of two one-axis weights).
NEAR, FAR, NEAR_NEAR, NEAR_FAR, FAR_FAR = range(5)
_PRODUCT = {(NEAR, NEAR): NEAR_NEAR, (NEAR, FAR): NEAR_FAR, (FAR, FAR): FAR_FAR}


@functools.lru_cache(maxsize=32)
def _tap_reads(levels: tuple[int, ...]) -> tuple[tuple[int, int, int, int, int], ...]:
    """Every read of the off-centre taps: (tap k, level index, row offset, column offset,
    weight index). A tap in direction +1 at dilation n + f reads rows p+n (weight 1-f, NEAR)
    and p+n+1 (f, FAR); in direction -1 rows p-n-1 (FAR) and p-n (NEAR)."""
    reads = []
    for li, n in enumerate(levels):
        per_axis = {1: ((n, NEAR), (n + 1, FAR)), -1: ((-n - 1, FAR), (-n, NEAR)), 0: ((0, None),)}
        for k in OFF_CENTRE_TAPS:
            dy, dx = TAP_DIRECTIONS[k]
            for oy, wy in per_axis[dy]:
                for ox, wx in per_axis[dx]:
                    kind = wx if wy is None else wy if wx is None else _PRODUCT[(min(wy, wx), max(wy, wx))]
                    reads.append((k, li, oy, ox, kind))
    return tuple(reads)


@functools.lru_cache(maxsize=32)
def _reads_by_tap(levels: tuple[int, ...]) -> tuple[tuple[tuple[int, int, int, int | None], ...], ...]:
    """For each tap k, its reads (level index, row offset, column offset, weight index); the
    centre tap's one read has weight index None (weight 1 at every dilation)."""
    by_tap = [[] for _ in range(9)]
    by_tap[CENTRE_TAP].append((0, 0, 0, None))
    for k, li, oy, ox, kind in _tap_reads(levels):
        by_tap[k].append((li, oy, ox, kind))
    return tuple(tuple(reads) for reads in by_tap)


def _weight_maps(weights: torch.Tensor, channel_axis: bool) -> list[list[torch.Tensor]]:
    """(B, L, 5, H, W) -> [level][weight index] views (B, 1, H, W), or (B, H, W) without the axis."""
    maps = [[weights[:, li, kind] for kind in range(weights.shape[2])] for li in range(weights.shape[1])]
    return [[m.unsqueeze(1) for m in level] for level in maps] if channel_axis else maps


class _TapViews:
    """The views one pass over the taps reads, each made once per call rather than per read
    (a training step makes about 20 such calls; each view is a few dispatcher calls)."""

    def __init__(self, planes: torch.Tensor, weights: torch.Tensor | None, origin: int, h: int, w: int):
        self.planes = [planes[:, k] for k in range(planes.shape[1])]  # (B, C, Hs, Ws) each: one or nine
        self.weights = _weight_maps(weights, channel_axis=True) if weights is not None else []
        self.origin, self.h, self.w = origin, h, w

    def window(self, k: int, oy: int, ox: int) -> torch.Tensor:
        """(B, C, H, W) view of tap k's plane (the shared one when there is one) at (oy, ox)."""
        plane = self.planes[k if len(self.planes) > 1 else 0]
        y, x = self.origin + oy, self.origin + ox
        return plane[:, :, y : y + self.h, x : x + self.w]


class _DilatedTaps(torch.autograd.Function):
    """Masked bilinear tap samples of a per-pixel dilated 3x3 window.

    ``planes`` (B, P, C, Hs, Ws): the zero-margined input, one plane shared by every tap (P = 1)
    or one per tap (P = 9, channels pre-mixed by the tap's kernel). ``weights`` (B, L, 5, H, W):
    the bilinear read weights per integer level (zero where a pixel has another level).
    ``mask`` (B, 9, H, W). Returns the masked taps (B, 9, C, H, W), or with ``reduce`` their
    sum over taps (B, C, H, W).

    Linear in each input, so the backward is the forward's reads transposed, each gradient
    accumulated in place into one buffer; a tap's unmasked value is recomputed there rather
    than kept. (Autograd of the same slices allocated and zero-filled a full-size gradient per
    read: about a quarter of a training step.) First-order only: the critics' double backward
    never runs through the generator.
    """

    @staticmethod
    def forward(ctx, planes, weights, mask, levels, origin, h, w, reduce):  # noqa: ANN001 (autograd)
        b, _, c = planes.shape[:3]
        # Every slot is written before it is read (the first tap's product starts the sum;
        # each tap fills its own slice), so nothing needs zero-filling first.
        out = planes.new_empty((b, c, h, w) if reduce else (b, 9, c, h, w))
        for k, tap in _each_tap(_TapViews(planes, weights, origin, h, w), levels):
            if not reduce:
                torch.mul(tap, mask[:, k : k + 1], out=out[:, k])
            elif k == 0:
                torch.mul(tap, mask[:, :1], out=out)
            else:
                out.addcmul_(tap, mask[:, k : k + 1])
        ctx.save_for_backward(planes, weights, mask)
        ctx.geometry = (levels, origin, h, w, reduce)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001
        planes, weights, mask = ctx.saved_tensors
        levels, origin, h, w, reduce = ctx.geometry
        grad_planes = torch.zeros_like(planes) if ctx.needs_input_grad[0] else None
        grad_weights = torch.zeros_like(weights) if ctx.needs_input_grad[1] else None
        grad_mask = torch.empty_like(mask) if ctx.needs_input_grad[2] else None  # each tap fills its own
        views = _TapViews(planes, weights, origin, h, w)
        grad_views = _TapViews(grad_planes, None, origin, h, w) if grad_planes is not None else None
        grad_weight_maps = _weight_maps(grad_weights, channel_axis=False) if grad_weights is not None else None
        for k, tap in _each_tap(views, levels):
            grad = grad_out if reduce else grad_out[:, k]  # (B, C, H, W)
            if grad_mask is not None:
                _channel_dot(grad_mask[:, k], grad, tap, accumulate=False)
            grad_tap = grad * mask[:, k : k + 1]
            for li, oy, ox, kind in _reads_by_tap(levels)[k]:
                if kind is None:  # the centre tap: weight 1 at every dilation
                    if grad_views is not None:
                        grad_views.window(k, 0, 0).add_(grad_tap)
                    continue
                if grad_views is not None:
                    grad_views.window(k, oy, ox).addcmul_(grad_tap, views.weights[li][kind])
                if grad_weight_maps is not None:
                    _channel_dot(grad_weight_maps[li][kind], grad_tap, views.window(k, oy, ox))
        return grad_planes, grad_weights, grad_mask, None, None, None, None, None


def _channel_dot(target: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool = True) -> None:
    """target (B, H, W) += (or, without ``accumulate``, =) the sum over channels of a * b,
    (B, C, H, W); in place for one channel (a sum over a single channel would allocate, fill and
    copy)."""
    if a.shape[1] == 1:
        if accumulate:
            target.addcmul_(a[:, 0], b[:, 0])
        else:
            torch.mul(a[:, 0], b[:, 0], out=target)
    elif accumulate:
        target += (a * b).sum(dim=1)
    else:
        torch.sum(a * b, dim=1, out=target)


def _each_tap(views: _TapViews, levels: tuple[int, ...]):
    """(k, tap k's unmasked bilinear sample (B, C, H, W)) for the nine taps."""
    for k, reads in enumerate(_reads_by_tap(levels)):
        tap = None
        for li, oy, ox, kind in reads:
            window = views.window(k, oy, ox)
            if kind is None:
                tap = window
            elif tap is None:
                tap = window * views.weights[li][kind]
            else:
                tap.addcmul_(window, views.weights[li][kind])
        yield k, tap


def _read_weights(frac: torch.Tensor, whole: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """(B, 1, H, W) fractional dilation -> (B, L, 5, H, W) bilinear read weights per level."""
    stacks = []
    for level in levels:
        here = (whole == level).to(frac.dtype) if len(levels) > 1 else 1.0
        near, far = (1 - frac) * here, frac * here  # here * here == here on the diagonals
        stacks.append(torch.cat((near, far, near * near, near * far, far * far), dim=1))
    return torch.stack(stacks, dim=1)


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
    distinct n (``MAX_SLICE_LEVELS``), and on any device but the CPU, the general grid_sample
    path runs instead (the same values and gradients, tested).
    """
    if x_padded.device.type != "cpu" or exporting():
        # On an accelerator one gather is fast, and the slice path's level count would cost a
        # device-to-host sync per call (int() of a reduction): the forward stays asynchronous.
        # An exported graph cannot branch on the dilations' values either.
        return _sampling_grid_conv2d(x_padded, dilation, mask, kernel)
    return _sliced_conv2d(x_padded, dilation, mask, kernel, max_levels)


def _sliced_conv2d(
    x_padded: torch.Tensor,
    dilation: torch.Tensor,
    mask: torch.Tensor,
    kernel: torch.Tensor,
    max_levels: int | None = None,
) -> torch.Tensor:
    """The slice path of ``adaptive_dilated_conv2d`` (any device; one host sync per call)."""
    b, c_in, hp, wp = x_padded.shape
    h, w = hp - 2, wp - 2
    c_out = kernel.shape[1]
    whole = torch.floor(dilation).detach()
    low, high = int(whole.min()), int(whole.max())  # two reductions; unique() would sort
    levels = list(range(low, high + 1))
    if len(levels) > (MAX_SLICE_LEVELS if max_levels is None else max_levels):
        return _sampling_grid_conv2d(x_padded, dilation, mask, kernel)
    weights = _read_weights(dilation - whole, whole, levels)  # the fraction carries the offsets' gradient
    margin = high + 1  # zeros beyond the padded input, as DCNv2 samples them
    source = F.pad(x_padded, (margin, margin, margin, margin))
    hs, ws = hp + 2 * margin, wp + 2 * margin
    origin = margin + 1  # index of output pixel (0, 0) in ``source``
    if c_out < c_in:  # sample Cout pre-mixed planes per tap instead of Cin inputs
        # (B, 9*Cout, Cin) @ (B, Cin, Hs*Ws) -> (B, 9, Cout, Hs, Ws); zeros stay zero
        mixed = torch.bmm(kernel.permute(0, 3, 1, 2).reshape(b, 9 * c_out, c_in), source.reshape(b, c_in, hs * ws))
        return _DilatedTaps.apply(mixed.view(b, 9, c_out, hs, ws), weights, mask, tuple(levels), origin, h, w, True)
    taps = _DilatedTaps.apply(source.unsqueeze(1), weights, mask, tuple(levels), origin, h, w, False)
    columns = taps.view(b, 9 * c_in, h * w)  # masked taps, (B, 9, Cin, H, W)
    # (B, Cout, 9*Cin) with the tap index outermost, as in ``columns``
    return torch.bmm(kernel.permute(0, 1, 3, 2).reshape(b, c_out, 9 * c_in), columns).view(b, c_out, h, w)


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
        self.offset_conv = Conv2d(in_channels, 1, 3)
        self.mask_conv = Conv2d(in_channels, 9, 3)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.constant_(self.offset_conv.bias, offset_eps)
        nn.init.zeros_(self.mask_conv.weight)
        nn.init.zeros_(self.mask_conv.bias)

    def modulated_kernel(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, Cout, Cin, 9); Cin 1 for x of 1
        """Per-sample kernels; for a one-channel ``x`` (identical channels), summed over Cin."""
        ch_low, filt_low = self.omni_low(x)
        ch_high, filt_high = self.omni_high(x)
        weight = self.weight.flatten(2)  # (Cout, Cin, 9)
        mean = weight.mean(dim=-1, keepdim=True)
        low_gain = (2 * ch_low[:, None, :]) * (2 * filt_low[:, :, None])  # (B, Cout, Cin)
        high_gain = (2 * ch_high[:, None, :]) * (2 * filt_high[:, :, None])
        kernel = mean * low_gain.unsqueeze(-1) + (weight - mean) * high_gain.unsqueeze(-1)
        return kernel if x.shape[1] == self.in_channels else kernel.sum(dim=2, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin or 1, H, W) -> (B, Cout, H, W)
        """A one-channel ``x`` stands for Cin identical channels (see ``_for_input``)."""
        x = self.freq_select(x)
        kernel = self.modulated_kernel(x)
        x_padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        # Offset and mask convolutions in one call: (B, 1 + 9, H, W).
        weights = _for_input(torch.cat((self.offset_conv.weight, self.mask_conv.weight)), x)
        biases = torch.cat((self.offset_conv.bias, self.mask_conv.bias))
        offset_mask = conv2d(x_padded, weights, biases)
        offset, mask_logits = offset_mask.split((1, 9), dim=1)  # split: its backward is one cat
        dilation = 1 + offset.abs()  # (B, 1, H, W)
        mask = torch.sigmoid(mask_logits)  # (B, 9, H, W)
        out = adaptive_dilated_conv2d(x_padded, dilation, mask, kernel)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out
