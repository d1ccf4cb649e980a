"""Building blocks of the models: SSIM maps, patch tiling, the training schedule, the random state."""
