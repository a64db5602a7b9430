"""Where a generator trained from scratch starts (dwsfusion.model.init)."""

import pytest
import torch

from dwsfusion.model import FUSION_INITS, Generator, init_fusion_as_sum, initialise
from dwsfusion.step import build_networks


def _sources(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 1, 64, 72, generator=g), torch.rand(4, 1, 64, 72, generator=g)


def _head_input(generator: Generator, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    _, _, _, ir_weighted, vi_weighted = generator.fuse(ir, vi)
    return torch.cat((ir_weighted, vi_weighted), dim=1)  # (B, 2, H, W)


@torch.no_grad()
def test_the_head_adds_its_weighted_sources_once_its_random_parts_are_removed():
    # With no random part in the output conv and the learnt branch (conv_in) silenced, what is
    # left is exactly the designed start: fused = ir_w + vi_w, every kernel gain 1.
    torch.manual_seed(0)
    generator = init_fusion_as_sum(Generator(), random_part=0.0).train()
    generator.fusion.conv_in.weight.zero_()
    x = _head_input(generator, *_sources())
    expected = (x[:, :1] + x[:, 1:]).clamp(0, 1)
    torch.testing.assert_close(generator.fusion(x), expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_the_release_start_is_not_a_sum_and_the_sum_start_is_close_to_one():
    ir, vi = _sources(1)
    gaps = {}
    for fusion_init in FUSION_INITS:
        torch.manual_seed(0)
        generator = initialise(Generator(), fusion_init).train()
        x = _head_input(generator, ir, vi)
        gaps[fusion_init] = (generator.fusion(x) - (x[:, :1] + x[:, 1:]).clamp(0, 1)).abs().mean().item()
    # The small random part and the default-initialised conv_in branch stay: close, not equal.
    assert 0 < gaps["sum"] < 0.03
    assert gaps["release"] > 0.15  # the release's start is dark noise, far from the sum


def test_the_release_start_is_pytorchs_default_and_an_unknown_name_is_refused():
    torch.manual_seed(0)
    default = Generator()
    torch.manual_seed(0)
    release = initialise(Generator(), "release")
    for (name, a), b in zip(default.state_dict().items(), release.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="unknown fusion_init 'zeros'"):
        initialise(Generator(), "zeros")


def test_build_networks_starts_as_a_sum_by_default_and_every_parameter_still_learns():
    torch.manual_seed(0)
    nets = build_networks()
    head = nets.generator.fusion
    assert torch.equal(head.skip.weight, torch.ones_like(head.skip.weight))
    assert not head.conv_out.omni_low.channel_gate.weight.any()
    ir, vi = _sources(2)
    out = nets.generator.train()(ir, vi)
    sum(t.mean() for t in out).backward()
    # The zeroed gate layers get gradients at once (their inputs are non-zero), so nothing is frozen.
    for gate in (head.conv_out.omni_low.channel_gate, head.conv_out.omni_high.filter_gate):
        assert gate.weight.grad.abs().sum() > 0


def test_a_seed_is_a_start_the_workflow_can_score_again():
    """``TrainSettings.start_networks`` (the training loop's start, and the workflow table's
    'start' column) gives the same generator for the same seed and another for another seed."""
    from pipelines.config import TrainSettings

    def weights(seed: int) -> list[torch.Tensor]:
        return [p.detach().clone() for p in TrainSettings(seed=seed).start_networks().generator.parameters()]

    first, again, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def _alpha_gradients(generator: Generator) -> tuple[torch.Tensor, float]:
    ir, vi = _sources(2)
    alpha = generator.alpha(ir, vi)
    (generator.fuse(ir, vi)[0].mean() + alpha.sum()).backward()
    grads = [p.grad for p in generator.alpha.parameters()]
    return alpha.detach(), sum(float(g.abs().sum()) for g in grads if g is not None)


def test_a_dead_alphanet_never_learns_and_the_alive_start_does():
    torch.manual_seed(0)
    dead = Generator()
    with torch.no_grad():
        dead.alpha.fc.bias.fill_(-10.0)  # what some seeds draw: fc's output below 0 for every input
    alpha, gradient = _alpha_gradients(dead)
    assert (alpha == 0).all() and gradient == 0.0  # the ReLU passes nothing: no step can revive it
    for seed in range(3):
        torch.manual_seed(seed)
        alive = initialise(Generator(), "sum", "alive")
        alpha, gradient = _alpha_gradients(alive)
        torch.testing.assert_close(alpha, torch.full_like(alpha, 0.3))  # the same start on every seed
        assert gradient > 0 and float(alive.alpha.fc.weight.grad.abs().sum()) > 0


def test_the_alive_start_changes_the_alphanet_head_alone():
    release, alive = (build_networks(fusion_init="sum", seed=4, alpha_init=a).generator for a in ("release", "alive"))
    differ = [k for k, v in release.state_dict().items() if not torch.equal(v, alive.state_dict()[k])]
    assert differ == ["alpha.fc.weight", "alpha.fc.bias"]
    with pytest.raises(ValueError, match="unknown alpha_init"):
        initialise(Generator(), "sum", "zero")
