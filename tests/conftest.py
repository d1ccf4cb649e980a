"""Shared fixtures: real images from the embedded quickstart data (``tests/helpers.py`` holds paths and loaders)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .helpers import EMBEDDED, load_image


def _first_training_image() -> Path:
    return min((EMBEDDED / "train" / "good").glob("*.png"))


@pytest.fixture(scope="session")
def gray_image() -> torch.Tensor:
    """A real defect-free BSData image converted to gray and resized (stretched) from 512 x 208 to 256 x 256:
    (1, 3, 256, 256), three equal channels, as a grayscale PNG is loaded by anomalib."""
    return load_image(_first_training_image(), (256, 256), mode="L")


@pytest.fixture(scope="session")
def pitting_image() -> torch.Tensor:
    """A real, non-square BSData image from the embedded data: (1, 3, 208, 512)."""
    return load_image(_first_training_image())
