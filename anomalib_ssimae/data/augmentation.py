"""On-the-fly training crops with the SSIM-AE augmentation.

The authors' code (``dataset_operations/augmentation.py`` of Rádli & Czúni, after plutoyuxie's SSIM-AE; see
Rádli & Czúni 2021 §5) writes a static set of 10,000-12,500 augmented crops to disk. Here the same
recipe runs on the fly, batched on tensors, from the resized training images:

1. with probability ``rotation_prob`` rotate the image by an angle uniform in ``[-max_rotation, max_rotation]``
   degrees about its centre and keep only the largest axis-aligned rectangle inside it (no black corners);
   when that rectangle is smaller than the patch, the crop is not rotated;
2. take a ``patch_size`` crop at a uniformly random position (whole pixels when not rotated);
3. flip horizontally / vertically with probabilities ``hflip_prob`` / ``vflip_prob``.

Steps 1-2 are one ``grid_sample`` call for all rotated crops (bilinear); unrotated crops are exact pixel copies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def largest_inner_rectangle(
    width: float,
    height: float,
    angle: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Width and height of the largest axis-aligned rectangle inside a ``width x height`` rectangle rotated by
    ``angle`` (radians, any shape). Closed form of the maximal-area inscribed rectangle, as in the authors' code.
    Computed in float64: near 45 degrees ``cos^2 - sin^2`` cancels (float32 gave 171 px instead of 181 px for a
    256 px square). Returns float32 tensors of ``angle``'s shape.
    """
    sin_a, cos_a = angle.double().sin().abs(), angle.double().cos().abs()
    long_side, short_side = max(width, height), min(width, height)
    # Case 1: the rectangle touches only two sides (thin or near 45 degrees).
    half = 0.5 * short_side
    safe_sin, safe_cos = sin_a.clamp_min(1e-12), cos_a.clamp_min(1e-12)
    w1, h1 = (half / safe_sin, half / safe_cos) if width >= height else (half / safe_cos, half / safe_sin)
    # Case 2: fully constrained.
    cos_2a = cos_a * cos_a - sin_a * sin_a  # negative beyond 45 degrees, where the numerators are negative too
    cos_2a = torch.where(cos_2a.abs() < 1e-12, torch.full_like(cos_2a, 1e-12), cos_2a)
    w2, h2 = (width * cos_a - height * sin_a) / cos_2a, (height * cos_a - width * sin_a) / cos_2a
    # Near 45 degrees both cases meet; the tolerance absorbs float32 angles such as pi / 4.
    two_sided = (short_side <= 2 * sin_a * cos_a * long_side) | ((sin_a - cos_a).abs() < 1e-6)
    return torch.where(two_sided, w1, w2).float(), torch.where(two_sided, h1, h2).float()


def sample_patches(
    images: torch.Tensor,
    num_patches: int,
    patch_size: int = 128,
    rotation_prob: float = 0.3,
    max_rotation: float = 45.0,
    hflip_prob: float = 0.3,
    vflip_prob: float = 0.3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw augmented square crops from a batch of images.

    Args:
        images: ``(B, C, H, W)`` with ``H, W >= patch_size``; each crop comes from a uniformly drawn image.
        num_patches: number of crops ``N``.
        patch_size: crop side in pixels.
        rotation_prob, max_rotation: probability of a rotation and its largest angle in degrees.
        hflip_prob, vflip_prob: probabilities of horizontal and vertical flips.
        generator: optional random generator (defaults to torch's global one, seeded by ``seed_everything``).

    Returns:
        ``(N, C, patch_size, patch_size)``, same dtype and device as ``images``.

    Raises:
        ValueError: if an image side is smaller than ``patch_size``.
    """
    batch, _, height, width = images.shape
    if min(height, width) < patch_size:
        msg = f"training images of {height} x {width} px are smaller than patch_size {patch_size}"
        raise ValueError(msg)
    device = images.device
    draw = generator.device if generator is not None else device  # a CPU generator may serve images on a GPU

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=draw).to(device)

    index = torch.randint(batch, (num_patches,), generator=generator, device=draw).to(device)
    angle = (uniform(num_patches) * 2 - 1) * math.radians(max_rotation)
    angle = torch.where(uniform(num_patches) < rotation_prob, angle, torch.zeros_like(angle))
    inner_w, inner_h = largest_inner_rectangle(width, height, angle)
    fits = (inner_w >= patch_size) & (inner_h >= patch_size)
    angle = torch.where(fits, angle, torch.zeros_like(angle))
    rotated = angle != 0
    inner_w = torch.where(rotated, inner_w, torch.full_like(inner_w, width))
    inner_h = torch.where(rotated, inner_h, torch.full_like(inner_h, height))
    # Top-left offset inside the inner rectangle; whole pixels when not rotated (exact crop).
    off_x, off_y = uniform(num_patches) * (inner_w - patch_size), uniform(num_patches) * (inner_h - patch_size)
    off_x = torch.where(rotated, off_x, (uniform(num_patches) * (width - patch_size + 1)).floor())
    off_y = torch.where(rotated, off_y, (uniform(num_patches) * (height - patch_size + 1)).floor())
    # Crop centre relative to the image centre, in the rotated frame, in pixels.
    centre_x = off_x + patch_size / 2 - inner_w / 2
    centre_y = off_y + patch_size / 2 - inner_h / 2

    # Affine map from the crop's normalised coordinates to the image's normalised coordinates (align_corners=False).
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (N, 2, 2)
    to_image = torch.tensor([2 / width, 2 / height], device=device).view(1, 2, 1)
    linear = to_image * rotation * (patch_size / 2)
    shift = to_image * (rotation @ torch.stack([centre_x, centre_y], -1).unsqueeze(-1))
    theta = torch.cat([linear, shift], dim=2).to(images.dtype)
    # Unrotated crops are copied pixel for pixel; only rotated ones are resampled (bilinear).
    steps = torch.arange(patch_size, device=device)
    rows = (off_y.long()[:, None] + steps)[:, :, None]
    cols = (off_x.long()[:, None] + steps)[:, None, :]
    patches = images[index[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()
    if rotated.any():
        grid = F.affine_grid(
            theta[rotated], [int(rotated.sum()), images.shape[1], patch_size, patch_size], align_corners=False
        )
        patches[rotated] = F.grid_sample(
            images[index[rotated]], grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    hflip = (uniform(num_patches) < hflip_prob).view(-1, 1, 1, 1)
    vflip = (uniform(num_patches) < vflip_prob).view(-1, 1, 1, 1)
    patches = torch.where(hflip, patches.flip(-1), patches)
    return torch.where(vflip, patches.flip(-2), patches)


class CropSampler:
    """Training crops of one optimiser step, configured once (the model builds it in ``__init__``).

    Args:
        batch_size: crops per call ``N`` (at least 1).
        patch_size: crop side in pixels (at least 1).
        rotation_prob, max_rotation: probability of a rotation (in [0, 1]) and its largest angle in degrees.
        hflip_prob, vflip_prob: flip probabilities, each in [0, 1].

    Calling it with images ``(B, C, H, W)`` returns ``(N, C, patch_size, patch_size)`` (see :func:`sample_patches`).

    Raises:
        ValueError: naming the argument that is out of range.

    Example:
        >>> sampler = CropSampler(batch_size=4, patch_size=8, rotation_prob=0.0)
        >>> sampler(torch.rand(2, 1, 16, 16)).shape
        torch.Size([4, 1, 8, 8])
    """

    def __init__(
        self,
        batch_size: int = 128,
        patch_size: int = 128,
        rotation_prob: float = 0.3,
        max_rotation: float = 45.0,
        hflip_prob: float = 0.3,
        vflip_prob: float = 0.3,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("patch_size", patch_size)):
            if value < 1:
                msg = f"{name} must be at least 1, got {value}"
                raise ValueError(msg)
        for name, value in (("rotation_prob", rotation_prob), ("hflip_prob", hflip_prob), ("vflip_prob", vflip_prob)):
            if not 0 <= value <= 1:
                msg = f"{name} is a probability and must be in [0, 1], got {value}"
                raise ValueError(msg)
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.rotation_prob = rotation_prob
        self.max_rotation = max_rotation
        self.hflip_prob = hflip_prob
        self.vflip_prob = vflip_prob

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(batch_size, C, patch_size, patch_size)`` augmented crops."""
        return sample_patches(
            images,
            self.batch_size,
            self.patch_size,
            self.rotation_prob,
            self.max_rotation,
            self.hflip_prob,
            self.vflip_prob,
            generator,
        )
