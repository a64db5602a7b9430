"""Facts shared by the library and the pipeline stages, importable without torch."""

from typing import Literal, get_args

# pytorch-msssim, 5 scales, window 11: each side of an image or patch must exceed 160 px.
MS_SSIM_MIN_SIDE = 161

# The metric suite, in the column order of every metrics CSV (the IVIF convention).
METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "CC", "VIF", "Qabf", "Nabf", "SSIM", "MS-SSIM", "PSNR", "MSE")

# Where a generator trained from scratch starts its fusion head (dwsfusion.model.init).
FusionInit = Literal["sum", "release"]
FUSION_INITS: tuple[str, ...] = get_args(FusionInit)
# Where its AlphaNet starts: the release's random initialisation, or "alive" at one fixed alpha.
AlphaInit = Literal["release", "alive"]
ALPHA_INITS: tuple[str, ...] = get_args(AlphaInit)

# The baselines ``dwsfusion compare`` knows by name (dwsfusion.compare): pixel-wise mean and max
# fusion of the IR and VIS luma, and each source as it is.
BASELINE_METHODS = ("mean", "max", "ir", "vi")
