"""Tiled inference: every pixel covered, border reached, exact image back with an identity network."""

import pytest
import torch
from torch import nn

from anomalib_ssimae.components.tiling import PatchTiler, axis_runs
from anomalib_ssimae.models.ssim_ae.torch_model import SsimAeModel


def test_axis_runs() -> None:
    assert axis_runs(256, 128, 32) == [(0, 5)]  # 0, 32, 64, 96, 128: 5 x 5 = 25 patches (paper §5)
    assert axis_runs(208, 128, 32) == [(0, 3), (80, 1)]  # 0, 32, 64 + 80 flush with the border
    assert axis_runs(128, 128, 32) == [(0, 1)]
    with pytest.raises(ValueError, match="smaller than patch_size"):
        axis_runs(100, 128, 32)
    with pytest.raises(ValueError, match="stride must be"):
        axis_runs(256, 128, 129)


@pytest.mark.parametrize(
    ("height", "width", "patches"), [(256, 256, 25), (208, 512, 52), (130, 131, 4), (300, 400, 70)]
)
def test_every_pixel_covered_and_image_restored(height: int, width: int, patches: int) -> None:
    tiler = PatchTiler(128, 32)
    images = torch.rand(2, 3, height, width)
    tiles = tiler.tile(images)
    assert tiles.shape == (2 * patches, 3, 128, 128)
    coverage = tiler._fold(torch.ones(1, 128 * 128, patches), height, width)
    assert coverage.min() >= 1  # every pixel lies in at least one patch
    assert (tiler.untile(tiles, height, width) - images).abs().max() < 1e-6


def test_last_patch_is_flush_with_the_border() -> None:
    tiler = PatchTiler(128, 32)
    image = torch.zeros(1, 1, 208, 512)
    image[..., -1, -1] = 1.0  # bottom-right pixel
    tiles = tiler.tile(image)
    assert tiles[-1, 0, -1, -1] == 1.0  # the last patch ends exactly at the corner


@pytest.mark.parametrize("in_channels", [1, 3])
def test_identity_network_gives_zero_anomaly(in_channels: int, pitting_image: torch.Tensor) -> None:
    model = SsimAeModel(in_channels=in_channels).eval()
    model.network = nn.Identity()
    inputs, reconstruction, _, _ = model.reconstruct(pitting_image)
    assert (reconstruction - inputs).abs().max() < 1e-6
    prediction = model(pitting_image)
    assert prediction.anomaly_map.shape == (1, 1, 208, 512)
    # Inputs equal to 1e-7 (rounding of the averaging); float32 SSIM resolves that to ~1e-4 in flat regions,
    # where E[x^2] - E[x]^2 cancels against C2 = 9e-4.
    assert prediction.anomaly_map.abs().max() < 1e-3
    assert prediction.pred_score.abs().max() < 1e-4


def test_grayscale_conversion_keeps_gray_values(gray_image: torch.Tensor) -> None:
    model = SsimAeModel(in_channels=1).eval()
    model.network = nn.Identity()
    inputs, _, _, _ = model.reconstruct(gray_image)
    assert inputs.shape == (1, 1, 256, 256)
    assert (inputs - gray_image[:, :1]).abs().max() < 1e-6  # a gray image as RGB: channels equal


def test_patches_in_chunks_give_the_same_map() -> None:
    # 208 x 512 at stride 32: 52 patches per image, 104 for the batch; chunks of 7 leave a short last chunk
    images = torch.rand(2, 3, 208, 512, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    whole = SsimAeModel(patch_batch_size=1000).eval()
    chunked = SsimAeModel(patch_batch_size=7).eval()
    chunked.load_state_dict(whole.state_dict())
    with torch.no_grad():
        expected, result = whole(images), chunked(images)
    assert (result.anomaly_map - expected.anomaly_map).abs().max() < 1e-5
    assert torch.allclose(result.pred_score, expected.pred_score, atol=1e-6)
    with pytest.raises(ValueError, match="patch_batch_size must be at least 1"):
        SsimAeModel(patch_batch_size=0)
