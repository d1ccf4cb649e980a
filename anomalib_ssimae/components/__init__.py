"""Building blocks shared by the models: SSIM maps and patch tiling."""
