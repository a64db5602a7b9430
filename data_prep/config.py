"""The prep stage's settings, defined once: ``dwsfusion prep`` takes its options and defaults
from ``PrepSettings``, the workflow's ``prep:`` section is a ``PrepSettings``, and
``run_prep`` takes a ``PrepConfig`` (the settings plus the source and the output)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dwsfusion.constants import MS_SSIM_MIN_SIDE


class PrepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: int = Field(192, description="square patch side, > 160 (MS-SSIM's 5 scales)")
    stride: int = Field(160, ge=1, description="step of the patch grid (MSRS 640x480: 2 x 3 patches at 192/160)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the source images held out for validation")
    seed: int = Field(0, description="seed of the train/val split")
    scale: float = Field(
        1.0,
        gt=0,
        le=4,
        description="resize every pair by this factor before cutting patches (the release trained on half-size MSRS)",
    )
    fit_patch: bool = Field(
        False,
        description="a pair that --scale would shrink below the patch is shrunk only to the patch's side, not rejected",
    )
    pairs_per_task: int = Field(64, ge=1, description="pairs per Ray task and per Parquet shard")

    @field_validator("patch_size")
    @classmethod
    def _ms_ssim_needs_161(cls, value: int) -> int:
        if value < MS_SSIM_MIN_SIDE:
            raise ValueError(
                f"{value}: the MS-SSIM loss (5 scales, window 11) needs patches larger than 160 px per side; "
                f"use {MS_SSIM_MIN_SIDE} or more"
            )
        return value

    def identity(self) -> dict:
        """What determines the output (the source's identity is its checksums, not its path).
        ``scale`` and ``fit_patch`` count only when set, so data prepared before they existed
        keeps its key."""
        fields = {"patch_size", "stride", "val_fraction", "seed"}
        fields |= {name for name, unset in (("scale", 1.0), ("fit_patch", False)) if getattr(self, name) != unset}
        return self.model_dump(include=fields)


class PrepConfig(PrepSettings):
    source: str = Field(description="MSRS root (train/ir, train/vi[, test/...]) or a folder with ir/ + vi/")
    out: str = Field(description="output folder or pyarrow URI (s3://, gs://, file://)")
