"""How a generator trained from scratch starts.

``release``: PyTorch's default initialisation, as the release trains. Its fusion head then maps
the two weighted sources through random 3x3 kernels and per-sample random kernel gains: the
first fused images are dark noise (mean grey 0.03 to 0.14 on the sample scenes, where the sources
average 0.39), and a short run spends its steps climbing out of that.

``sum``: the fusion head starts as the sum of its weighted sources, ``ir_w + vi_w``, plus a
small random part, like a zero-initialised residual branch (Goyal et al. 2017; Zhang et al.,
Fixup, 2019). The weight nets, the AlphaNet and the critics keep their default initialisation:
only the head's starting point moves. It matters because the weight nets reduce to sigmoid of
their input, so the head learns the whole fusion. Measured (docs/fidelity.md, "Where the fusion
head starts"): on the sample scenes 200 steps fuse to VIF 0.72 instead of 0.61-0.66 (nine seeds,
each above mean fusion's 0.69); on RoadScene -> TNO it ran 0.05 to 0.11 VIF ahead of the release's
start at every evaluation from step 200 to 800 (two seeds), and the full reproduction reached TNO
VIF 0.906 against 0.889.
"""

from __future__ import annotations

import torch

from ..constants import ALPHA_INITS, FUSION_INITS, AlphaInit, FusionInit
from .adaptive_conv import CENTRE_TAP, AdaptiveDilatedConv
from .generator import Generator

RANDOM_PART = 0.1  # of the output conv's default random weights, kept to break the channels' symmetry
ALPHA_START = 0.3  # the release's AlphaNet gives 0.29-0.31 on TNO pairs, our seed 0's trained one 0.24


def _centre_mask(conv: AdaptiveDilatedConv) -> float:
    """The centre tap's mask at init: sigmoid of its bias (the mask conv's weight is zero)."""
    return float(torch.sigmoid(conv.mask_conv.bias[CENTRE_TAP]))


@torch.no_grad()
def init_fusion_as_sum(generator: Generator, random_part: float = RANDOM_PART) -> Generator:
    """Set ``generator.fusion`` so that, before any step, fused ~= ir_w + vi_w.

    The head is ``conv_out(CBAM(conv_in(x)) + skip(x))`` on x = (ir_w, vi_w). Here ``skip``
    (1x1, 2 -> C) gives every channel ir_w + vi_w; ``conv_out`` (3x3 adaptive, C -> 1) gets
    its centre tap at 1 / (mask x C), so its C channels add back up to one sum, plus
    ``random_part`` of its default random kernel; its two omni attentions' gate layers start
    at zero, so every kernel gain is (2 sigmoid(0))^2 = 1 instead of a random per-sample factor.
    ``conv_in`` and the CBAM keep their default initialisation: their branch adds a small learnt
    correction from the first step on. Returns the generator."""
    head = generator.fusion
    head.skip.weight.fill_(1.0)
    head.skip.bias.zero_()
    conv_out = head.conv_out
    conv_out.weight.mul_(random_part)
    conv_out.weight[:, :, 1, 1] += 1.0 / (_centre_mask(conv_out) * conv_out.in_channels)
    if conv_out.bias is not None:
        conv_out.bias.zero_()
    for omni in (conv_out.omni_low, conv_out.omni_high):
        for gate in (omni.channel_gate, omni.filter_gate):
            gate.weight.zero_()
            gate.bias.zero_()
    return generator


@torch.no_grad()
def init_alpha_alive(generator: Generator, alpha: float = ALPHA_START) -> Generator:
    """Start the AlphaNet at ``alpha`` for every pair, with a live gradient.

    The AlphaNet is ``relu(fc(mean features))``. At PyTorch's default start the fc's output is
    negative for every input on some seeds (seeds 1, 3, 4 and 5 of 0-5 on TNO pairs): alpha is
    then 0, the ReLU passes no gradient, and the AlphaNet never learns, for the whole run. Here
    the fc starts at weight 0 and bias ``alpha``: the first alpha is ``alpha`` whatever the seed,
    the fc's weights learn from the first step (their gradient is the mean of the ReLU'd
    features), and the convolutions once those weights move. Draws no random numbers, so the
    rest of a seed's start is unchanged. Returns the generator."""
    generator.alpha.fc.weight.zero_()
    generator.alpha.fc.bias.fill_(alpha)
    return generator


def initialise(generator: Generator, fusion_init: FusionInit = "sum", alpha_init: AlphaInit = "release") -> Generator:
    """Apply ``fusion_init`` (one of ``FUSION_INITS``) and ``alpha_init`` (``ALPHA_INITS``) to a
    freshly built generator."""
    if fusion_init not in FUSION_INITS:
        raise ValueError(f"unknown fusion_init {fusion_init!r}; known: {', '.join(FUSION_INITS)}")
    if alpha_init not in ALPHA_INITS:
        raise ValueError(f"unknown alpha_init {alpha_init!r}; known: {', '.join(ALPHA_INITS)}")
    if fusion_init == "sum":
        init_fusion_as_sum(generator)
    if alpha_init == "alive":
        init_alpha_alive(generator)
    return generator
