"""Data: training crops (augmentation), masked-block corruption (denoising variants) and image-file reading."""
