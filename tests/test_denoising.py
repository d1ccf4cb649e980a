"""Denoising training: the masked block, its colour and mask, the weighted loss, and no corruption at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_ssimae import SsimAe, SsimAeExtended, SsimDae, SsimDaeExtended
from anomalib_ssimae.data.corruption import add_masked_blocks, dominant_colour
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss


def striped_crop() -> torch.Tensor:
    """(1, 3, 128, 128): 60 % orange (0.9, 0.5, 0.1), 40 % dark blue (0.1, 0.2, 0.6), by rows."""
    crop = torch.empty(1, 3, 128, 128)
    crop[..., :] = torch.tensor([0.9, 0.5, 0.1]).view(1, 3, 1, 1)
    crop[..., 77:, :] = torch.tensor([0.1, 0.2, 0.6]).view(1, 3, 1, 1)
    return crop


def test_dominant_colour_is_the_most_frequent_colour_in_rgb_order() -> None:
    colour = dominant_colour(striped_crop())
    assert torch.allclose(colour, torch.tensor([[0.9, 0.5, 0.1]]))  # not (0.1, 0.5, 0.9): no R/B swap


def test_dominant_colour_averages_within_the_winning_bin(pitting_image: torch.Tensor) -> None:
    crop = torch.full((1, 1, 16, 16), 0.30)
    crop[..., :8, :] = 0.31  # same bin of width 1/8: mean 0.305
    crop[..., 0, :4] = 0.9  # another bin, fewer pixels
    assert torch.allclose(dominant_colour(crop), torch.tensor([[(0.31 * 124 + 0.30 * 128) / 252]]))
    # a real crop against a NumPy count of its 8 x 8 x 8 colour bins (ties: the lowest bin, as argmax)
    crop = pitting_image[..., :128, :128]
    pixels = crop[0].flatten(1).T.double().numpy()  # (128 * 128, 3)
    bins, which, counts = np.unique(
        np.minimum(pixels * 8, 7).astype(int), axis=0, return_inverse=True, return_counts=True
    )
    assert len(bins) > 1  # more than one colour bin: the count decides
    expected = pixels[which.ravel() == counts.argmax()].mean(axis=0)
    assert torch.allclose(dominant_colour(crop).double(), torch.from_numpy(expected)[None], atol=1e-6)


def test_block_has_the_right_size_colour_and_mask() -> None:
    crop = striped_crop()
    generator = torch.Generator().manual_seed(3)
    corrupted, mask = add_masked_blocks(crop, num_blocks=1, block_size=20, generator=generator)
    assert mask.shape == (1, 1, 128, 128) and mask.dtype == torch.bool
    assert int(mask.sum()) == 400  # exactly 20 x 20 (the authors' OpenCV call drew 21 x 21)
    rows, cols = mask[0, 0].nonzero().unbind(1)
    assert int(rows.max() - rows.min()) == 19 and int(cols.max() - cols.min()) == 19
    painted = corrupted[0][:, mask[0, 0]]
    assert torch.allclose(painted, torch.tensor([0.9, 0.5, 0.1]).view(3, 1).expand_as(painted))
    assert torch.equal(corrupted[0][:, ~mask[0, 0]], crop[0][:, ~mask[0, 0]])  # nothing else changed
    # the input is untouched
    assert torch.equal(crop, striped_crop())


def test_blocks_land_everywhere_and_inside() -> None:
    crops = torch.rand(500, 1, 128, 128)
    _, mask = add_masked_blocks(crops, num_blocks=2, block_size=20, generator=torch.Generator().manual_seed(0))
    per_crop = mask.sum(dim=(1, 2, 3))
    assert per_crop.min() >= 400 and per_crop.max() <= 800  # two blocks, possibly overlapping
    coverage = mask.any(dim=0)[0]
    # first and last rows and columns are reached: top-left positions 0 .. 108 inclusive (seeded draw)
    assert coverage[0].any() and coverage[-1].any() and coverage[:, 0].any() and coverage[:, -1].any()


def test_weighted_loss_equals_hand_computation() -> None:
    target = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    reconstruction = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]]])
    mask = torch.tensor([[[[True, False], [False, True]]]])
    # squared errors 0.25, 0, 0.25, 0.0625; alpha on (0,0) and (1,1), beta on the others; mean over 4 pixels
    expected = (3.0 * (0.25 + 0.0625) + 0.5 * (0.0 + 0.25)) / 4
    loss = ReconstructionLoss("l2", alpha=3.0, beta=0.5)(target, reconstruction, mask)
    assert abs(loss.item() - expected) < 1e-7
    # alpha = beta = 1 is the plain loss
    assert torch.isclose(
        ReconstructionLoss("l2")(target, reconstruction, mask), ((target - reconstruction) ** 2).mean()
    )


def test_ssim_weighting_uses_the_per_pixel_map(gray_image: torch.Tensor) -> None:
    image = gray_image[:, :1, :128, :128]
    corrupted, mask = add_masked_blocks(image, block_size=20, generator=torch.Generator().manual_seed(1))
    loss = ReconstructionLoss("ssim", alpha=1.0, beta=0.0)
    only_block = loss(image, corrupted, mask)
    error_map = loss.loss_map(image, corrupted)
    assert torch.isclose(only_block, (error_map * mask).mean())
    assert only_block > 0
    assert ReconstructionLoss("ssim", alpha=0.0, beta=0.0)(image, corrupted, mask) == 0


@pytest.mark.parametrize(("variant", "plain_variant"), [(SsimDae, SsimAe), (SsimDaeExtended, SsimAeExtended)])
def test_inference_never_corrupts(variant: type[SsimAe], plain_variant: type[SsimAe], gray_image: torch.Tensor) -> None:
    denoising = variant().eval()
    plain = plain_variant().eval()
    plain.model.load_state_dict(denoising.model.state_dict())
    with torch.no_grad():
        first, second, reference = denoising.model(gray_image), denoising.model(gray_image), plain.model(gray_image)
    assert torch.equal(first.anomaly_map, second.anomaly_map)  # no randomness at inference
    assert torch.equal(first.anomaly_map, reference.anomaly_map)  # identical to the non-denoising model
