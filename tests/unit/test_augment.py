"""dwsfusion.augment: a pair is flipped as one (it stays aligned), each image gets its own gamma,
the same seed draws the same augmentation, and visible noise has the asked-for spread."""

import torch

from dwsfusion.augment import add_visible_noise, augment_pairs


def _pairs(batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(batch, 1, 6, 5), torch.rand(batch, 1, 6, 5)


def _flip_of(original: torch.Tensor, augmented: torch.Tensor) -> tuple[bool, bool] | None:
    for flip_x in (False, True):
        for flip_y in (False, True):
            candidate = original.flip(-1) if flip_x else original
            candidate = candidate.flip(-2) if flip_y else candidate
            if torch.allclose(candidate, augmented, atol=1e-6):
                return flip_x, flip_y
    return None


def test_both_images_of_a_pair_take_the_same_flip_and_all_four_occur():
    ir, vi = _pairs()
    out_ir, out_vi = augment_pairs(ir, vi, torch.Generator().manual_seed(1), gamma=(1.0, 1.0))
    flips = [(_flip_of(ir[k], out_ir[k]), _flip_of(vi[k], out_vi[k])) for k in range(len(ir))]
    assert all(a is not None and a == b for a, b in flips), "a pair's images were flipped differently"
    assert {a for a, _ in flips} == {(False, False), (False, True), (True, False), (True, True)}


def _gamma_of(original: torch.Tensor, augmented: torch.Tensor) -> float | None:
    """g where augmented = flip(original) ** g for one of the four flips, else None."""
    for dims in ((), (-1,), (-2,), (-1, -2)):
        ratio = (augmented.flip(dims) if dims else augmented).log() / original.log()
        if torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4):
            return float(ratio.flatten()[0])
    return None


def test_each_image_gets_its_own_gamma_within_the_range():
    ir, vi = _pairs()
    ir, vi = ir.clamp(0.05, 0.95), vi.clamp(0.05, 0.95)  # log() defined and informative everywhere
    out_ir, out_vi = augment_pairs(ir, vi, torch.Generator().manual_seed(2), gamma=(0.5, 2.0))
    assert out_ir.shape == ir.shape and out_vi.shape == vi.shape
    ir_gammas = torch.tensor([_gamma_of(ir[k], out_ir[k]) for k in range(len(ir))])
    vi_gammas = torch.tensor([_gamma_of(vi[k], out_vi[k]) for k in range(len(vi))])
    for gammas in (ir_gammas, vi_gammas):
        assert 0.5 - 1e-4 <= gammas.min() and gammas.max() <= 2.0 + 1e-4
        assert gammas.min() < 0.7 and gammas.max() > 1.5  # spread over the range, not one value
    assert (ir_gammas - vi_gammas).abs().max() > 0.1  # drawn per modality, not shared


def test_the_same_seed_draws_the_same_augmentation():
    ir, vi = _pairs(8)
    first = augment_pairs(ir, vi, torch.Generator().manual_seed(3))
    again = augment_pairs(ir, vi, torch.Generator().manual_seed(3))
    other = augment_pairs(ir, vi, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_visible_noise_has_the_asked_for_spread_in_grey_levels_and_stays_in_range():
    vi = torch.full((4, 1, 64, 64), 0.5)
    noisy = add_visible_noise(vi, 2.0, torch.Generator().manual_seed(5))
    added = (noisy - vi) * 255  # grey levels
    assert noisy.shape == vi.shape
    assert abs(float(added.std()) - 2.0) < 0.05 and abs(float(added.mean())) < 0.05
    assert (added[0] - added[1]).abs().max() > 0  # drawn per image and pixel, not one pattern
    edges = add_visible_noise(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(8, 1, 1, 2), 30.0)
    assert edges.min() >= 0 and edges.max() <= 1 and (edges[..., 0] > 0).any() and (edges[..., 1] < 1).any()
    again = add_visible_noise(vi, 2.0, torch.Generator().manual_seed(5))
    assert torch.equal(noisy, again)
