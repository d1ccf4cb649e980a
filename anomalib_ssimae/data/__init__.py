"""Training-data augmentation."""
