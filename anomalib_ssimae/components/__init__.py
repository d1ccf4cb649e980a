"""Building blocks of the models: SSIM maps, patch tiling and the training schedule."""
