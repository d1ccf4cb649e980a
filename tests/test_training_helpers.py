"""Crop budget per image, seeding, argument checks and image-file checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_ssimae import SsimAe, SsimDae
from anomalib_ssimae.data.validation import check_image_files
from anomalib_ssimae.models.ssim_ae.lightning_model import updates_for_images

from .conftest import EMBEDDED


def test_optimiser_steps_follow_the_images() -> None:
    # quickstart: 40 images in batches of 32 + 8, 20 steps of 128 crops -> 16 + 4 (not 10 + 10)
    assert [updates_for_images(0, 32, 40, 20), updates_for_images(32, 8, 40, 20)] == [16, 4]
    # magnetic_tile: 400 images, batches of 32 (last 16), 79 steps: the sum is exact and no batch is favoured
    steps = [updates_for_images(i * 32, min(32, 400 - i * 32), 400, 79) for i in range(13)]
    assert sum(steps) == 79
    assert max(steps[:-1]) - min(steps[:-1]) <= 1 and steps[-1] in (3, 4)


def test_seed_makes_initial_weights_reproducible() -> None:
    first, second, other = SsimAe(seed=7), SsimAe(seed=7), SsimAe(seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert not torch.equal(first.model.network.encoder[0].weight, other.model.network.encoder[0].weight)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"crops_per_epoch": 0}, "crops_per_epoch must be at least 1"),
        ({"latent_dim": 0}, "latent_dim must be at least 1"),
        ({"lr_step_size": 0}, "lr_step_size must be None or at least 1"),
        ({"image_size": [256]}, r"image_size must be an int or \[height, width\]"),
        ({"hflip_prob": 2.0}, "hflip_prob is a probability"),
    ],
)
def test_arguments_fail_at_construction(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SsimAe(**arguments)
    with pytest.raises(ValueError, match="num_blocks must be at least 1"):
        SsimDae(num_blocks=0)


def test_image_check_names_bad_files(tmp_path: Path) -> None:
    good = sorted((EMBEDDED / "train" / "good").glob("*.png"))[:3]
    assert check_image_files(str(p) for p in good) == 3
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cannot read image .*truncated\.png"):
        check_image_files([str(good[1]), str(truncated)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read image .*empty\.png"):
        check_image_files([str(empty)])
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(deep)
    with pytest.raises(ValueError, match=r"deep\.png has PIL mode I;16"):
        check_image_files([str(deep)])
