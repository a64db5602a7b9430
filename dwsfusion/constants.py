"""Facts shared by the library and the pipeline stages, importable without torch."""

# pytorch-msssim, 5 scales, window 11: each side of an image or patch must exceed 160 px.
MS_SSIM_MIN_SIDE = 161

# The metric suite, in the column order of every metrics CSV (the IVIF convention).
METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "CC", "VIF", "Qabf", "Nabf", "SSIM", "MS-SSIM", "PSNR", "MSE")
