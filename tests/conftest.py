"""Shared fixtures: real images from ../shared/datasets and the embedded quickstart data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
EMBEDDED = REPO / "datasets" / "bsdata_pitting_mini"


def load_image(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """PNG -> (1, 3, H, W) float32 in [0, 1]; ``size`` is (height, width)."""
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="session")
def grid_image() -> torch.Tensor:
    """A real MVTec AD grid image (defect-free), resized to 256 x 256: (1, 3, 256, 256)."""
    return load_image(SHARED_DATASETS / "mvtec_ad_grid_mini" / "train" / "good" / "000.png", (256, 256))


@pytest.fixture(scope="session")
def pitting_image() -> torch.Tensor:
    """A real, non-square BSData image from the embedded data: (1, 3, 208, 512)."""
    return load_image(sorted((EMBEDDED / "train" / "good").glob("*.png"))[0])
