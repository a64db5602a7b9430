import pytest
import torch

from dwsfusion.model import Discriminator, Generator, GeneratorConfig


def test_parameter_count_is_the_papers():
    assert sum(p.numel() for p in Generator().parameters()) == 9035


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (161, 199), (33, 200)])
def test_any_size_round_trips(size):
    torch.manual_seed(0)
    g = Generator().eval()
    ir, vi = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    with torch.no_grad():
        out = g(ir, vi)
    for t in out:
        assert t.shape == (1, 1, *size)
        assert torch.isfinite(t).all()
    assert out.fused.min() >= 0 and out.fused.max() <= 1
    for w in (out.w_ir, out.w_vi, out.f_ir, out.f_vi):
        assert w.min() > 0 and w.max() < 1


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    for config in (GeneratorConfig(), GeneratorConfig(channel_min_hidden=1)):
        g = Generator(config).train()
        with torch.no_grad():  # ReLUs that a random init may leave closed: AlphaNet's output,
            g.alpha.fc.bias.fill_(0.5)  # and the 1-wide channel-MLP unit (its inputs are >= 0 mostly)
            g.fusion.conv_out.bias.fill_(0.5)  # keep the fused image inside clamp(0, 1)
            g.fusion.conv_out.weight.mul_(0.1)
            for name, p in g.named_parameters():
                if name.endswith("channel.fc1.weight"):
                    p.abs_()
        # 128 x 144: at 1/16 scale (8 x 9) the three frequency bands are still distinct.
        ir, vi = torch.rand(2, 1, 128, 144), torch.rand(2, 1, 128, 144)
        out = g(ir, vi)
        loss = sum(t.mean() for t in out)
        loss.backward()
        dead = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not dead, dead
        zero = [n for n, p in g.named_parameters() if p.grad.abs().sum() == 0]
        assert not zero, zero


def test_release_channel_attention_is_half_and_working_width_is_trainable():
    g = Generator()
    x = torch.rand(1, 4, 8, 8)
    torch.testing.assert_close(g.fusion.att.channel(x), x * 0.5)
    wide = Generator(GeneratorConfig(channel_min_hidden=1))
    assert wide.fusion.att.channel.fc1.weight.shape == (1, 4)


@pytest.mark.parametrize("size", [(176, 176), (240, 320), (161, 203)])
def test_discriminator_head_is_size_independent_and_trained(size):
    d = Discriminator()
    score = d(torch.rand(3, 1, *size))
    assert score.shape == (3, 1)
    score.sum().backward()
    assert d.head.weight.grad is not None and d.head.weight.grad.abs().sum() > 0


def test_a_batch_of_same_size_pairs_fuses_as_each_pair_alone():
    """Eval-mode BatchNorm and per-sample attention: stacking pairs changes nothing."""
    import numpy as np

    from dwsfusion.fuse import fuse_luma, fuse_luma_batch

    torch.manual_seed(0)
    generator = Generator().eval()
    rng = np.random.default_rng(0)
    irs, vis = rng.random((3, 41, 57), np.float32), rng.random((3, 41, 57), np.float32)
    together = fuse_luma_batch(generator, irs, vis)
    for i in range(3):
        np.testing.assert_allclose(together[i], fuse_luma(generator, irs[i], vis[i]), atol=1e-5)
