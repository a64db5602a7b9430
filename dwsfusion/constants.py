"""Facts shared by the library and the pipeline stages, importable without torch."""

# pytorch-msssim, 5 scales, window 11: each side of an image or patch must exceed 160 px.
MS_SSIM_MIN_SIDE = 161
