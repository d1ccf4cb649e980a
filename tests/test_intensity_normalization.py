"""Per-image intensity standardisation (``intensity_normalization: standardize``) on real embedded images."""

from __future__ import annotations

import pytest
import torch

from anomalib_ssimae import SsimAe
from anomalib_ssimae.models.ssim_ae.torch_model import STANDARD_MEAN, STANDARD_STD, SsimAeModel, standardize


def test_standardize_gives_the_stated_mean_and_deviation(pitting_image: torch.Tensor) -> None:
    image = pitting_image  # (1, 3, 208, 512) real image
    out = standardize(image)
    assert out.shape == image.shape
    assert out.min() >= 0 and out.max() <= 1
    unclipped = ((image - image.mean()) / image.std(unbiased=False) * STANDARD_STD + STANDARD_MEAN).clamp(0, 1)
    torch.testing.assert_close(out, unclipped, atol=1e-5, rtol=0)
    assert float(standardize(torch.full((1, 1, 8, 8), 0.3)).max()) == pytest.approx(0.5, abs=1e-5)  # constant image


def test_brightness_and_contrast_changes_leave_the_map_unchanged(pitting_image: torch.Tensor) -> None:
    """A darker, flatter capture of the same surface (0.4 x + 0.05, no clipping) gets the same anomaly map with
    standardisation, and a different one without."""
    torch.manual_seed(0)
    image = pitting_image[:, :, :128, :160]
    dim = 0.4 * image + 0.05
    maps = {}
    for option in ("none", "standardize"):
        model = SsimAeModel(intensity_normalization=option, latent_dim=16).eval()
        torch.manual_seed(0)
        with torch.no_grad():
            maps[option] = [model(x).anomaly_map for x in (image, dim)]
    torch.testing.assert_close(maps["standardize"][0], maps["standardize"][1], atol=1e-4, rtol=0)
    assert (maps["none"][0] - maps["none"][1]).abs().max() > 0.05


def test_training_crops_are_cut_from_standardised_images(pitting_image: torch.Tensor) -> None:
    model = SsimAe(image_size=[128, 160], intensity_normalization="standardize", visualizer=False)
    prepared = model.model.prepare(pitting_image[:, :, :128, :160])
    assert prepared.shape == (1, 1, 128, 160)  # gray model
    assert float(prepared.mean()) == pytest.approx(STANDARD_MEAN, abs=0.01)
    assert float(prepared.std(unbiased=False)) == pytest.approx(STANDARD_STD, abs=0.01)


def test_unknown_intensity_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="intensity_normalization must be one of"):
        SsimAe(intensity_normalization="zscore", visualizer=False)
