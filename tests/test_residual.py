"""Residual maps on a real image with a constructed defect."""

import pytest
import torch

from anomalib_ssimae.models.ssim_ae.torch_model import residual_map


@pytest.mark.parametrize("residual", ["ssim", "l2", "ssim_l2"])
def test_zero_for_identical_images(residual: str, grid_image: torch.Tensor) -> None:
    assert residual_map(grid_image, grid_image, residual).abs().max() < 1e-6


def test_high_exactly_where_the_defect_is(grid_image: torch.Tensor) -> None:
    image = grid_image[:, :1]
    defect = image.clone()
    top, left, side = 100, 140, 20
    defect[..., top : top + side, left : left + side] = 1.0 - defect[..., top : top + side, left : left + side]
    ssim_res = residual_map(image, defect, "ssim")[0, 0]
    inside = ssim_res[top : top + side, left : left + side]
    assert inside.mean() > 0.5
    # SSIM window 11: pixels more than 5 px from the square see identical windows -> residual exactly 0.
    far = torch.ones_like(ssim_res, dtype=torch.bool)
    far[top - 5 : top + side + 5, left - 5 : left + side + 5] = False
    assert ssim_res[far].abs().max() < 1e-6
    l2_res = residual_map(image, defect, "l2")[0, 0]
    changed = (image - defect)[0, 0] != 0
    assert torch.equal(l2_res > 0, changed)  # L2 is non-zero on changed pixels only
    assert ssim_res.argmax() // 256 in range(top - 5, top + side + 5)
