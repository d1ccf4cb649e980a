"""SSIM map against kornia and pytorch-msssim, bf16 safety, losses."""

import kornia
import pytest
import pytorch_msssim
import torch

from anomalib_ssimae.components.ssim import ssim_map
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss


@pytest.fixture
def pair(gray_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    image = gray_image[:, :1]
    generator = torch.Generator().manual_seed(0)
    noisy = (image + 0.1 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    return image, noisy


def test_identical_images_give_one(gray_image: torch.Tensor) -> None:
    assert torch.allclose(ssim_map(gray_image, gray_image), torch.ones(1, 3, 256, 256), atol=1e-6)


def test_same_padding_matches_kornia(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    ours = ssim_map(*pair, padding="same")
    # kornia in float64 as the reference: in float32 its E[x^2] - E[x]^2 loses 1e-4 on this smooth image, ours 2.3e-5
    theirs = kornia.metrics.ssim(*(x.double() for x in pair), window_size=11, max_val=1.0)
    assert ours.shape == (1, 1, 256, 256)
    assert (ours.double() - theirs).abs().max() < 5e-5


def test_valid_padding_matches_pytorch_msssim(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    ours = ssim_map(*pair, padding="valid")
    assert ours.shape == (1, 1, 246, 246)
    # 2.1e-6 apart on this smooth image: pytorch_msssim builds its Gaussian window in float32, and where the image
    # is flat E[x^2] - E[x]^2 amplifies the weights' rounding (its mean is 2.5e-6 from a float64 computation with
    # an exact window, ours 4e-7); 1e-6 held on the high-contrast MVTec grid image used before.
    assert abs(ours.mean() - pytorch_msssim.ssim(*pair, data_range=1.0)) < 5e-6


def test_bf16_autocast_keeps_float32(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    reference = ssim_map(*pair)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = ssim_map(pair[0].bfloat16().float(), pair[1].bfloat16().float())
    assert under_autocast.dtype == torch.float32
    # Only the bf16 rounding of the inputs differs, not the arithmetic.
    assert (under_autocast - reference).abs().max() < 0.05
    exact = ssim_map(pair[0].bfloat16().float(), pair[1].bfloat16().float())
    assert torch.equal(under_autocast, exact)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="same shape"):
        ssim_map(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 31))
    with pytest.raises(ValueError, match="does not fit"):
        ssim_map(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), padding="valid")


def test_losses(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    image, noisy = pair
    ssim_loss = ReconstructionLoss("ssim")(image, noisy)  # reflect padding ("same"), as kornia's SSIM loss
    assert abs(ssim_loss - kornia.losses.ssim_loss(image, noisy, window_size=11, max_val=1.0)) < 1e-4  # Eq. 7
    valid_loss = ReconstructionLoss("ssim", padding="valid")(image, noisy)  # the authors' form
    assert (
        abs(valid_loss - (1 - pytorch_msssim.ssim(image, noisy, data_range=1.0)) / 2) < 3e-6
    )  # half the SSIM tolerance of the test above
    assert ssim_loss != valid_loss
    assert 0 < ssim_loss < 1
    assert ReconstructionLoss("ssim")(image, image) < 1e-6
    assert torch.isclose(ReconstructionLoss("l2")(image, noisy), ((image - noisy) ** 2).mean())
    l1 = (image - noisy).abs().mean()
    assert torch.isclose(ReconstructionLoss("ssim_l1", l1_weight=2.0)(image, noisy), ssim_loss + 2 * l1)
    with pytest.raises(ValueError, match="loss must be one of"):
        ReconstructionLoss("bce")


def test_replicate_padding_uses_only_windows_inside_the_image(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    valid = ssim_map(*pair, padding="valid")
    replicated = ssim_map(*pair, padding="replicate")
    assert replicated.shape == (1, 1, 256, 256)
    assert torch.equal(replicated[..., 5:-5, 5:-5], valid)
    # each border pixel carries the value of the nearest window that fits: row 0 repeats row 5, corners the corner
    assert torch.equal(replicated[..., 0, 5:-5], valid[..., 0, :])
    assert torch.equal(replicated[..., :5, :5], valid[..., :1, :1].expand(1, 1, 5, 5))
