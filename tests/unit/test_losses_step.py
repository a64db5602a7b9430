import copy
import math

import pytest
import torch

from dwsfusion.losses import (
    LossWeights,
    content_losses,
    dual_weight_losses,
    gradient_penalty,
    ms_ssim_mean,
    sobel_gradient,
    supervised_losses,
)
from dwsfusion.model import Generator
from dwsfusion.step import build_networks, build_optimizers, train_step


def test_sobel_gradient_of_a_vertical_step():
    x = torch.zeros(1, 1, 5, 6)
    x[..., 3:] = 1.0
    g = sobel_gradient(x)
    assert g[0, 0, 2, 2].item() == 4.0 and g[0, 0, 2, 3].item() == 4.0 and g[0, 0, 2, 0].item() == 0.0


def test_content_terms_vanish_at_their_targets():
    torch.manual_seed(0)
    ir, vi = torch.rand(2, 1, 176, 176), torch.rand(2, 1, 176, 176)
    terms = content_losses(torch.maximum(ir, vi), ir, vi)
    assert terms["intensity"].item() == 0 and abs(terms["ms_ssim"].item()) < 1e-5
    # grad(max(ir, vi)) is not max(grad ir, grad vi); with equal sources every term is zero.
    assert terms["gradient"].item() > 0
    assert all(abs(v.item()) < 1e-5 for v in content_losses(ir, ir, ir).values())
    with pytest.raises(ValueError, match="160"):
        content_losses(ir[..., :150, :150], ir[..., :150, :150], vi[..., :150, :150])


def test_ms_ssim_runs_in_fp32_under_half_precision_autocast():
    """Half-precision variances (E[x^2] - E[x]^2) can go negative and the scales' fractional
    powers then give NaN: a bf16 training step reached -inf at step 5 before this."""
    torch.manual_seed(0)
    x = torch.rand(4, 1, 176, 176)
    y = (x + 0.05 * torch.rand_like(x)).clamp(0, 1)
    full = ms_ssim_mean(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = ms_ssim_mean(x, y)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(full.item(), abs=1e-6)


def test_dual_weight_terms():
    out = Generator().eval()(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    terms = dual_weight_losses(out)
    assert terms["dual_cross"].item() == pytest.approx((out.w_ir - (1 - out.w_vi)).abs().mean().item())
    assert set(terms) == {"dual_ir", "dual_vi", "dual_cross"}


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = c * sum(x): grad norm = |c| * sqrt(N) everywhere.
    class Linear(torch.nn.Module):
        def forward(self, x):
            return 0.01 * x.flatten(1).sum(1, keepdim=True)

    real, fake = torch.rand(3, 1, 10, 10), torch.rand(3, 1, 10, 10)
    assert gradient_penalty(Linear(), real, fake).item() == pytest.approx((0.01 * 10 - 1) ** 2, rel=1e-5)


def test_train_step_updates_all_three_networks_and_logs_every_term():
    torch.manual_seed(0)
    nets = build_networks()
    opts = build_optimizers(nets)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.modules().items()}
    ir, vi = torch.rand(2, 1, 176, 176), torch.rand(2, 1, 176, 176)
    logs = train_step(nets, opts, ir, vi, LossWeights())
    for key in (
        "g_total",
        "g_content",
        "g_intensity",
        "g_gradient",
        "g_ms_ssim",
        "g_dual_ir",
        "g_dual_vi",
        "g_dual_cross",
        "g_adversarial",
        "d_ir_loss",
        "d_ir_gp",
        "d_vi_loss",
        "d_vi_gp",
    ):
        assert math.isfinite(logs[key]), key
    for name, module in nets.modules().items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters(), strict=True))
        assert changed, f"{name} did not change"
    assert all(p.requires_grad for p in nets.d_ir.parameters())  # unfrozen after the G step


def test_discriminators_get_no_gradient_from_the_generator_step():
    torch.manual_seed(0)
    nets = build_networks()
    opts = build_optimizers(nets)
    grads_at_own_step = {}

    def record(module):
        grads_at_own_step[id(module)] = [p.grad.clone() for p in module.parameters()]

    train_step(nets, opts, torch.rand(2, 1, 176, 176), torch.rand(2, 1, 176, 176), sync_gradients=record)
    assert len(grads_at_own_step) == 3  # hook ran once per network: D_ir, D_vi, G
    for critic in (nets.d_ir, nets.d_vi):
        for kept, p in zip(grads_at_own_step[id(critic)], critic.parameters(), strict=True):
            assert torch.equal(kept, p.grad)  # the G step added nothing


@pytest.mark.parametrize("critic_steps", [None, 2], ids=["alone", "critics_warming_up"])
def test_train_step_without_the_adversarial_term_takes_the_supervised_generator_step(critic_steps):
    """Adversarial weight 0: the generator takes exactly the Adam step of the supervised loss
    (10 x content + dual-weight). By default the critics stay as they are; with ``critic_steps``
    (a warm-up) each takes that many updates on the batch, which the generator does not see."""
    torch.manual_seed(0)
    nets = build_networks()
    reference = copy.deepcopy(nets.generator)
    opts = build_optimizers(nets)
    critics_before = {k: copy.deepcopy(nets.modules()[k].state_dict()) for k in ("d_ir", "d_vi")}
    ir, vi = torch.rand(2, 1, 176, 176), torch.rand(2, 1, 176, 176)
    weights = LossWeights(adversarial=0.0)
    logs = train_step(nets, opts, ir, vi, weights, critic_steps=critic_steps)

    assert "g_adversarial" not in logs
    for name, state in critics_before.items():
        changed = [k for k, v in nets.modules()[name].state_dict().items() if not torch.equal(v, state[k])]
        if critic_steps is None:
            assert not changed and not any(key.startswith(name) for key in logs), f"{name} trained"
        else:
            assert changed and f"{name}_gp" in logs, f"{name} did not train"
            steps = {int(s["step"]) for s in getattr(opts, name).state.values()}
            assert steps == {critic_steps}, f"{name}: {steps} updates, not {critic_steps}"
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    loss = supervised_losses(reference(ir, vi), ir, vi, weights)["supervised"]
    loss.backward()
    optimizer.step()
    assert logs["g_total"] == pytest.approx(loss.item(), rel=1e-6)
    for ours, expected in zip(nets.generator.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
