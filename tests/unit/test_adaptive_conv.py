import torch
import torch.nn.functional as F

from dwsfusion.model.adaptive_conv import (
    AdaptiveDilatedConv,
    FrequencySelection,
    _sampling_grid_conv2d,
    adaptive_dilated_conv2d,
)


def _neutralise(conv: AdaptiveDilatedConv) -> None:
    """Zero offsets, mask -> 1, every omni gate -> 2*sigmoid(0) = 1."""
    with torch.no_grad():
        conv.offset_conv.bias.zero_()
        conv.mask_conv.bias.fill_(50.0)  # sigmoid(50) == 1 in float32
        for omni in (conv.omni_low, conv.omni_high):
            for gate in (omni.channel_gate, omni.filter_gate):
                gate.weight.zero_()
                gate.bias.zero_()


def test_functional_equals_conv2d_with_unit_dilation_and_mask():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 13, 17)
    weight = torch.randn(5, 3, 3, 3)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    out = adaptive_dilated_conv2d(
        xp, torch.ones(2, 1, 13, 17), torch.ones(2, 9, 13, 17), weight.flatten(2).expand(2, -1, -1, -1)
    )
    torch.testing.assert_close(out, F.conv2d(xp, weight), rtol=1e-5, atol=1e-5)


def test_integer_dilation_samples_the_right_taps_with_zeros_outside():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 9, 11)
    weight = torch.randn(1, 2, 3, 3)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    out = adaptive_dilated_conv2d(xp, torch.full((1, 1, 9, 11), 2.0), torch.ones(1, 9, 9, 11), weight.flatten(2)[None])
    # Taps at +-2 from the padded centre: zeros one pixel beyond the padded input (DCNv2).
    expected = F.conv2d(F.pad(xp, (1, 1, 1, 1)), weight, dilation=2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_mask_modulates_each_tap():
    torch.manual_seed(2)
    x = torch.randn(1, 1, 6, 7)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    mask = torch.zeros(1, 9, 6, 7)
    mask[:, 4] = 1  # only the centre tap survives
    kernel = torch.ones(1, 1, 1, 9)
    out = adaptive_dilated_conv2d(xp, torch.full((1, 1, 6, 7), 1.37), mask, kernel)
    torch.testing.assert_close(out, x)


def test_module_equals_replicate_padded_conv_when_neutral():
    torch.manual_seed(3)
    conv = AdaptiveDilatedConv(2, 4).eval()
    _neutralise(conv)
    x = torch.rand(2, 2, 15, 22)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


def test_frequency_selection_is_identity_at_init_and_sums_bands():
    torch.manual_seed(4)
    fs = FrequencySelection(3)
    for h, w in ((16, 16), (15, 23)):
        x = torch.randn(2, 3, h, w)
        torch.testing.assert_close(fs(x), x, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # gate 0 -> 2*sigmoid(-inf) = 0 removes the highest band only
        fs.gates[0].bias.fill_(-50.0)
    x = torch.randn(1, 3, 32, 32)
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
    boxed = torch.zeros_like(spectrum)
    boxed[..., 8:24, 8:24] = spectrum[..., 8:24, 8:24]
    low = torch.fft.ifft2(torch.fft.ifftshift(boxed, dim=(-2, -1)), norm="ortho").real
    torch.testing.assert_close(fs(x), low, rtol=1e-4, atol=1e-5)


def _reference_bands(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The release's low-pass: Re(ifft2(ifftshift(box * fftshift(fft2(x)))))."""
    h, w = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.double(), norm="ortho"), dim=(-2, -1))
    r0, r1 = round(h / 2 - h / (2 * factor)), round(h / 2 + h / (2 * factor))
    c0, c1 = round(w / 2 - w / (2 * factor)), round(w / 2 + w / (2 * factor))
    boxed = torch.zeros_like(spectrum)
    boxed[..., r0:r1, c0:c1] = spectrum[..., r0:r1, c0:c1]
    return torch.fft.ifft2(torch.fft.ifftshift(boxed, dim=(-2, -1)), norm="ortho").real.float()


def test_real_fft_band_split_equals_the_release_complex_one_on_odd_and_even_sizes():
    from dwsfusion.model.adaptive_conv import _rfft_band_mask

    torch.manual_seed(5)
    for h, w in ((32, 32), (15, 23), (480, 640), (475, 575), (9, 10)):
        x = torch.randn(1, 2, h, w)
        for factor in (2, 4, 8):
            mask = _rfft_band_mask(h, w, factor)  # trimmed after its last non-zero column
            mask = F.pad(mask, (0, w // 2 + 1 - mask.shape[1]))
            ours = torch.fft.irfft2(torch.fft.rfft2(x) * mask, s=(h, w))
            torch.testing.assert_close(ours, _reference_bands(x, factor), rtol=1e-4, atol=1e-5)


def test_slice_path_equals_the_grid_sample_path_values_and_gradients():
    """Several integer levels (dilations in [1, 4)), both mixing orders, zeros outside."""
    from dwsfusion.model.adaptive_conv import _sampling_grid_conv2d

    torch.manual_seed(6)
    for c_in, c_out in ((2, 4), (4, 1)):
        xp = torch.randn(2, c_in, 14, 19, dtype=torch.float64, requires_grad=True)
        dilation = (1 + 3 * torch.rand(2, 1, 12, 17, dtype=torch.float64)).requires_grad_(True)
        mask = torch.rand(2, 9, 12, 17, dtype=torch.float64, requires_grad=True)
        kernel = torch.randn(2, c_out, c_in, 9, dtype=torch.float64, requires_grad=True)
        inputs = (xp, dilation, mask, kernel)
        fast = adaptive_dilated_conv2d(*inputs)
        grads_fast = torch.autograd.grad(fast.square().sum(), inputs)
        slow = _sampling_grid_conv2d(*inputs)
        grads_slow = torch.autograd.grad(slow.square().sum(), inputs)
        torch.testing.assert_close(fast, slow)
        for a, b in zip(grads_fast, grads_slow, strict=True):
            torch.testing.assert_close(a, b)
        # With more distinct levels than allowed, the general path runs and agrees too.
        torch.testing.assert_close(adaptive_dilated_conv2d(*inputs, max_levels=1), slow)


def test_one_channel_input_equals_identical_channels_values_and_gradients():
    """CBAM on one channel feeds its FADC the same map twice (mean = max); the folded path
    must give what the two-channel computation gives, for the output and every gradient."""
    torch.manual_seed(7)
    conv = AdaptiveDilatedConv(2, 1, bias=False).double()
    with torch.no_grad():  # away from the neutral init: real gates, offsets over several levels, masks
        for p in conv.parameters():
            p.add_(0.3 * torch.randn_like(p))
        conv.offset_conv.bias.fill_(1.5)
    x = torch.rand(2, 1, 23, 30, dtype=torch.float64, requires_grad=True)
    folded = conv(x)
    grads_folded = torch.autograd.grad(folded.square().sum(), [x, *conv.parameters()])
    twice = conv(torch.cat((x, x), dim=1))
    grads_twice = torch.autograd.grad(twice.square().sum(), [x, *conv.parameters()])
    # The frequency selection runs its FFTs in float32: float32 agreement, not float64.
    torch.testing.assert_close(folded, twice, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_folded, grads_twice, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_training_after_inference_in_one_process():
    """The per-size and per-device constants are cached; made on a first call under
    inference_mode they were inference tensors, and a training step of that size then failed
    ("Inference tensors cannot be saved for backward"; found on CUDA, whose general path the
    last line takes here)."""
    torch.manual_seed(0)
    layer = AdaptiveDilatedConv(2, 3)
    x = torch.rand(2, 2, 37, 45)
    with torch.inference_mode():
        layer(x)
        _sampling_grid_conv2d(
            F.pad(x, (1, 1, 1, 1)), torch.full((2, 1, 37, 45), 1.5), torch.ones(2, 9, 37, 45), torch.rand(2, 3, 2, 9)
        )
    layer(x).sum().backward()
    dilation = torch.full((2, 1, 37, 45), 1.5, requires_grad=True)
    _sampling_grid_conv2d(
        F.pad(x, (1, 1, 1, 1)), dilation, torch.ones(2, 9, 37, 45), torch.rand(2, 3, 2, 9)
    ).sum().backward()
    assert dilation.grad is not None and layer.weight.grad is not None


def test_grid_path_keeps_sampling_positions_exact_for_a_bf16_input():
    """bf16 has 8 significant bits: built in the input's dtype, a position of 500 would round to
    a multiple of 4. The positions stay float32; only the input's own rounding remains."""
    torch.manual_seed(0)
    x = F.pad(torch.rand(1, 1, 8, 640), (1, 1, 1, 1))
    dilation = 1 + torch.rand(1, 1, 8, 640)
    mask, kernel = torch.rand(1, 9, 8, 640), torch.rand(1, 1, 1, 9)
    full = _sampling_grid_conv2d(x, dilation, mask, kernel)
    half = _sampling_grid_conv2d(x.bfloat16(), dilation.bfloat16(), mask, kernel)
    rounded = _sampling_grid_conv2d(x.bfloat16().float(), dilation.bfloat16().float(), mask, kernel)
    torch.testing.assert_close(half.float(), rounded, atol=1e-5, rtol=1e-5)
    assert (half.float() - full).abs().max() < 0.05
