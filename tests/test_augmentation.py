"""On-the-fly training crops: size, exact unrotated crops, no black corners after rotation, flips."""

import math

import pytest
import torch

from anomalib_ssimae.data.augmentation import largest_inner_rectangle, sample_patches


def test_largest_inner_rectangle_known_values() -> None:
    width, height = largest_inner_rectangle(256, 256, torch.tensor([0.0, math.pi / 4, math.pi / 6]))
    assert torch.allclose(width, torch.tensor([256.0, 256 / math.sqrt(2), 256 / (math.cos(math.pi / 6) + 0.5)]))
    assert torch.allclose(width, height)
    width, height = largest_inner_rectangle(512, 208, torch.tensor([0.0]))
    assert (width.item(), height.item()) == (512.0, 208.0)


def test_unrotated_crops_are_exact_pixels(pitting_image: torch.Tensor) -> None:
    crops = sample_patches(pitting_image, 16, 128, rotation_prob=0.0, hflip_prob=0.0, vflip_prob=0.0)
    assert crops.shape == (16, 3, 128, 128)
    # An image whose pixel values encode their position tells where each crop came from.
    height, width = 208, 512
    position = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
    located = sample_patches(position, 16, 128, rotation_prob=0.0, hflip_prob=0.0, vflip_prob=0.0)
    for crop in located:
        top, left = divmod(int(crop[0, 0, 0]), width)
        assert torch.equal(crop[0], position[0, 0, top : top + 128, left : left + 128])
    # and on real pixels: every crop is a whole-pixel window of the image
    for crop in crops:
        matches = (pitting_image[0, 0] == crop[0, 0, 0]).nonzero()
        assert any(
            torch.equal(pitting_image[0, :, t : t + 128, l : l + 128], crop)
            for t, l in matches.tolist()
            if t + 128 <= height and l + 128 <= width
        )


@pytest.mark.parametrize("size", [(256, 256), (208, 512)])
def test_rotation_never_shows_the_border(size: tuple[int, int]) -> None:
    images = torch.ones(2, 1, *size)
    crops = sample_patches(images, 64, 128, rotation_prob=1.0, max_rotation=45.0)
    assert crops.shape == (64, 1, 128, 128)
    assert crops.min() > 0.9999  # zero padding would bring black corners


def test_flips() -> None:
    image = torch.zeros(1, 1, 128, 128)
    image[..., :64, :] = 1.0  # top half white
    flipped = sample_patches(image, 8, 128, rotation_prob=0.0, hflip_prob=0.0, vflip_prob=1.0)
    assert torch.equal(flipped, image.flip(-2).expand(8, -1, -1, -1))
    kept = sample_patches(image, 8, 128, rotation_prob=0.0, hflip_prob=1.0, vflip_prob=0.0)
    assert torch.equal(kept, image.expand(8, -1, -1, -1))  # left-right symmetric image


def test_too_small_images_are_rejected() -> None:
    with pytest.raises(ValueError, match="smaller than patch_size"):
        sample_patches(torch.rand(1, 1, 100, 300), 4, 128)
