"""Typed configuration of the prep step (one place for the patch geometry defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dwsfusion.constants import MS_SSIM_MIN_SIDE

DEFAULT_PATCH = 192  # > 160 for 5-scale MS-SSIM; MSRS 640x480 gives 2 x 3 patches at stride 160
DEFAULT_STRIDE = 160


@dataclass(frozen=True)
class PrepConfig:
    source: str
    out: str
    patch_size: int = DEFAULT_PATCH
    stride: int = DEFAULT_STRIDE
    val_fraction: float = 0.1
    seed: int = 0
    pairs_per_task: int = 64  # one Ray task and one shard per this many pairs (MSRS: ~28 MB of patches)

    def __post_init__(self) -> None:
        if self.patch_size < MS_SSIM_MIN_SIDE:
            raise ValueError(
                f"patch_size={self.patch_size}: the MS-SSIM loss (5 scales, window 11) needs patches larger "
                f"than 160 px per side; use {MS_SSIM_MIN_SIDE} or more (default {DEFAULT_PATCH})"
            )
        if self.stride < 1:
            raise ValueError(f"stride={self.stride}: must be >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.pairs_per_task < 1:
            raise ValueError(f"pairs_per_task={self.pairs_per_task}: must be >= 1")

    def identity(self) -> dict:
        """What determines the output (the source's identity is its checksums, not its path)."""
        keys = ("patch_size", "stride", "val_fraction", "seed")
        return {k: v for k, v in asdict(self).items() if k in keys}
