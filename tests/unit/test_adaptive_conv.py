import torch
import torch.nn.functional as F

from dwsfusion.model.adaptive_conv import AdaptiveDilatedConv, FrequencySelection, adaptive_dilated_conv2d


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
