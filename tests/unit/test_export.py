"""ONNX export (dwsfusion.export) and the onnxruntime engine (dwsfusion.onnx_engine).

Fast here: the export paths of the model equal its default paths; the hard parts (the FFT band
split, the per-pixel dilation) exported alone and run on ONNX Runtime at sizes other than the
example's; the engine's plumbing. The whole generator's export (about 90 s) is in the slow test.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dwsfusion.errors import UsageError
from dwsfusion.model import Generator
from dwsfusion.model.adaptive_conv import (
    FREQ_FACTORS,
    AdaptiveDilatedConv,
    FrequencySelection,
    _axis_box,
    _band_limits,
)

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
# torch.onnx's notes on how it names the dynamic axes of inputs that share them
pytestmark = pytest.mark.filterwarnings("ignore:.*axis name:UserWarning")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 15, 16, 17, 60, 97, 128, 481])
@pytest.mark.parametrize("factor", FREQ_FACTORS)
def test_axis_box_is_the_release_box(size, factor):
    start, end = _band_limits(size, factor)
    shifted = np.zeros(size)
    shifted[start:end] = 1
    expected = np.fft.ifftshift(shifted)  # the centred box, back in unshifted frequency order
    np.testing.assert_array_equal(_axis_box(size, factor, torch.device("cpu")).numpy(), expected)


def _gated(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` with every parameter drawn (the gates start at zero: all bands equal)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module.eval()


@pytest.mark.parametrize("shape", [(1, 1, 5, 6), (2, 2, 31, 17), (1, 4, 97, 131), (1, 1, 64, 64)])
def test_band_split_for_any_size_equals_the_default(shape):
    fs = _gated(FrequencySelection(shape[1]))
    x = torch.rand(shape)
    with torch.no_grad():
        torch.testing.assert_close(fs.forward_any_size(x), fs(x), atol=2e-5, rtol=1e-4)


def test_generator_on_its_export_paths_equals_the_default(monkeypatch, random_checkpoint):
    """Run eagerly as torch.export traces it (every export path taken), against the default."""
    from dwsfusion.checkpoints import load_generator

    generator = load_generator(random_checkpoint)
    ir, vis = torch.rand(2, 1, 97, 131), torch.rand(2, 1, 97, 131)
    with torch.no_grad():
        default = generator.fuse(ir, vis)[0]
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
        exported_paths = generator.fuse(ir, vis)[0]
    torch.testing.assert_close(exported_paths, default, atol=1e-4, rtol=1e-4)


def _export_and_run(module: torch.nn.Module, example: torch.Tensor, sizes, tmp_path) -> None:
    """Export ``module`` for any H, W at ``example``'s size, run it on ONNX Runtime at ``sizes``."""
    height, width = torch.export.Dim("height", min=8), torch.export.Dim("width", min=8)
    program = torch.onnx.export(
        module, (example,), dynamo=True, input_names=["x"], dynamic_shapes=({2: height, 3: width},), verbose=False
    )
    path = tmp_path / "part.onnx"
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in sizes:
        x = torch.rand(example.shape[0], example.shape[1], h, w)
        with torch.no_grad():
            expected = module(x).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=5e-5, rtol=1e-4)


def test_band_split_exports_for_any_size(tmp_path):
    _export_and_run(_gated(FrequencySelection(2)), torch.rand(1, 2, 21, 30), [(21, 30), (64, 48), (33, 97)], tmp_path)


def test_adaptive_dilated_conv_exports_for_any_size(tmp_path):
    conv = _gated(AdaptiveDilatedConv(2, 3))
    with torch.no_grad():  # dilations well above 1, so the samples fall between pixels
        conv.offset_conv.bias.fill_(1.7)
    _export_and_run(conv, torch.rand(1, 2, 21, 30), [(21, 30), (40, 57)], tmp_path)


# ------------------------------------------------------------------ the engine
def test_onnx_fuser_runs_a_stack(mean_onnx):
    from dwsfusion.onnx_engine import OnnxFuser

    irs, vis = np.random.default_rng(0).random((2, 3, 17, 23), dtype=np.float32)
    np.testing.assert_allclose(OnnxFuser(mean_onnx)(irs, vis), (irs + vis) / 2, rtol=1e-6)


def test_load_fuser_picks_the_engine_by_file_and_names_the_fix(mean_onnx, random_checkpoint, tmp_path):
    from dwsfusion.fuse import load_fuser
    from dwsfusion.onnx_engine import OnnxFuser

    assert isinstance(load_fuser(mean_onnx), OnnxFuser)
    assert isinstance(load_fuser(random_checkpoint), Generator)
    with pytest.raises(UsageError, match="dwsfusion export --checkpoint"):
        load_fuser(random_checkpoint, "onnxruntime")
    with pytest.raises(UsageError, match="onnxruntime engine"):
        load_fuser(mean_onnx, "torch")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(UsageError, match="bad.onnx: not a loadable ONNX model"):
        load_fuser(bad)


def test_folder_form_fuses_with_an_onnx_file(mean_onnx, samples_dir, tmp_path):
    from dwsfusion.color import read_luma_u8
    from dwsfusion.fuse import fuse_luma_batch, load_fuser, load_pair
    from dwsfusion.pairs import find_pairs
    from dwsfusion.stream import fuse_folder
    from pipelines.cli import main

    assert main(["fuse", "--checkpoint", str(mean_onnx), "--ir", str(samples_dir / "ir"), "--vi",
                 str(samples_dir / "vi"), "--output", str(tmp_path / "cli"), "--quiet"]) == 0  # fmt: skip
    report = fuse_folder(mean_onnx, samples_dir / "ir", samples_dir / "vi", tmp_path / "api", progress=False)
    pairs, _ = find_pairs(samples_dir / "ir", samples_dir / "vi")
    assert len(report.written) == len(pairs) == 3
    for pair in pairs:
        source = load_pair(pair)
        expected = np.floor((source.ir + source.vis_y) / 2 * 255)
        written = read_luma_u8(tmp_path / "cli" / f"{pair.stem}.png")
        if source.chroma is None:
            assert np.abs(written.astype(int) - expected).max() <= 1
        assert (read_luma_u8(tmp_path / "api" / f"{pair.stem}.png") == written).all()
    with pytest.raises(UsageError, match="fp32"):
        fuse_luma_batch(load_fuser(mean_onnx), np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), "bf16")


@pytest.mark.slow
def test_whole_generator_exports_within_one_grey_level_and_fuses(random_checkpoint, samples_dir, tmp_path, capsys):
    """The real export from the command line (about 90 s on 2 cores), checked against PyTorch on
    the sample pairs, then the folder form with the file: the same images within one level."""
    from dwsfusion.color import read_image
    from dwsfusion.onnx_engine import OnnxFuser
    from pipelines.cli import main

    pairs = ["--ir", str(samples_dir / "ir"), "--vi", str(samples_dir / "vi")]
    onnx_file = tmp_path / "g.onnx"
    assert main(["export", "--checkpoint", str(random_checkpoint), "--output", str(onnx_file), *pairs, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "parity on 3 pair(s)" in printed and re.search(r"at most [01] grey level", printed), printed
    assert "parity" in OnnxFuser(onnx_file).metadata()
    for model, out in ((random_checkpoint, "torch"), (onnx_file, "onnx")):
        assert main(["fuse", "--checkpoint", str(model), *pairs, "--output", str(tmp_path / out), "--quiet"]) == 0
    for image in (tmp_path / "torch").glob("*.png"):
        torch_image, onnx_image = read_image(image)[0], read_image(tmp_path / "onnx" / image.name)[0]
        assert np.abs(torch_image.astype(int) - onnx_image).max() <= 1
