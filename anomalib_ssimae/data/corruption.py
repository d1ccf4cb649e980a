"""Masked-block corruption for the denoising autoencoders (SSIM-DAE, SSIM-DAEe).

Rádli & Czúni (2021) §5, Eq. 3: the network reconstructs the clean crop x from a corrupted crop C(x). "Small,
homogeneous masks ... of 20 x 20 ... colour = dominant colour of the actual (128 x 128) crop. Each training image
contained one mask." Differences from the authors' code, on purpose: the block is exactly
``block_size`` pixels (OpenCV drew 21 x 21), the colour keeps its channel order (the code swapped red and blue),
nothing is saved as JPEG, and the mask is kept so that the loss can weight corrupted pixels (Eq. 4).

Dominant colour, precisely: each channel is quantised to ``levels`` equal bins over [0, 1] (a coarse colour
histogram with ``levels ** C`` bins); the most populated bin wins (the lowest bin index on a tie), and the colour
is the mean of the crop's pixels in that bin. This is the "most frequent colour" at a tolerance of 1/levels,
without the bin-centre bias of returning the bin's midpoint.
"""

from __future__ import annotations

import torch


def dominant_colour(crops: torch.Tensor, levels: int = 8) -> torch.Tensor:
    """Dominant colour of each crop.

    Args:
        crops: ``(N, C, H, W)`` in [0, 1].
        levels: bins per channel of the colour histogram.

    Returns:
        ``(N, C)`` colours in [0, 1], same dtype as ``crops``.
    """
    n, channels = crops.shape[:2]
    quantised = (crops.float().clamp(0, 1) * levels).long().clamp(max=levels - 1)  # (N, C, H, W)
    weights = levels ** torch.arange(channels - 1, -1, -1, device=crops.device)
    codes = (quantised * weights.view(1, -1, 1, 1)).sum(dim=1).flatten(1)  # (N, H*W) bin index per pixel
    counts = torch.zeros(n, levels**channels, device=crops.device).scatter_add_(
        1, codes, torch.ones_like(codes, dtype=torch.float32)
    )
    winner = counts.argmax(dim=1, keepdim=True)  # first maximum on ties
    in_bin = (codes == winner).unsqueeze(1)  # (N, 1, H*W)
    pixels = crops.flatten(2)
    return ((pixels * in_bin).sum(dim=2) / in_bin.sum(dim=2)).to(crops.dtype)


def add_masked_blocks(
    crops: torch.Tensor,
    num_blocks: int = 1,
    block_size: int = 20,
    levels: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint ``num_blocks`` squares of the crop's dominant colour at uniformly random positions.

    Args:
        crops: ``(N, C, P, P)`` in [0, 1] (clean training crops; not modified).
        num_blocks: blocks per crop (paper: 1); blocks may overlap.
        block_size: block side in pixels (paper: 20), at most ``P``.
        levels: bins per channel of the dominant-colour histogram.
        generator: optional random generator.

    Returns:
        ``(corrupted, mask)``: ``(N, C, P, P)`` corrupted crops and the ``(N, 1, P, P)`` bool mask of painted pixels.

    Raises:
        ValueError: if ``block_size`` does not fit in the crop or ``num_blocks < 1``.
    """
    n, _, height, width = crops.shape
    if not 0 < block_size <= min(height, width):
        msg = f"block_size must be between 1 and the crop side {min(height, width)}, got {block_size}"
        raise ValueError(msg)
    if num_blocks < 1:
        msg = f"num_blocks must be at least 1, got {num_blocks}"
        raise ValueError(msg)
    device = crops.device
    draw = generator.device if generator is not None else device  # a CPU generator may serve crops on a GPU
    tops = torch.randint(height - block_size + 1, (n, num_blocks), generator=generator, device=draw).to(device)
    lefts = torch.randint(width - block_size + 1, (n, num_blocks), generator=generator, device=draw).to(device)
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    top, left = tops[..., None, None], lefts[..., None, None]  # (N, K, 1, 1)
    inside = (rows >= top) & (rows < top + block_size) & (cols >= left) & (cols < left + block_size)
    mask = inside.any(dim=1, keepdim=True)  # (N, 1, P, P)
    colour = dominant_colour(crops, levels)[..., None, None]  # (N, C, 1, 1)
    return torch.where(mask, colour, crops), mask


class MaskedBlocks:
    """Masked-block corruption of training crops, configured once (the model builds it in ``__init__``).

    Args:
        num_blocks: blocks per crop (paper: 1), at least 1.
        block_size: block side in pixels (paper: 20), between 1 and ``patch_size``.
        patch_size: side of the crops it will corrupt, to check ``block_size`` at construction.

    Calling it with crops ``(N, C, P, P)`` returns ``(corrupted, mask)`` (see :func:`add_masked_blocks`).

    Raises:
        ValueError: naming the argument that is out of range.

    Example:
        >>> corrupted, mask = MaskedBlocks(num_blocks=1, block_size=4, patch_size=16)(torch.zeros(2, 1, 16, 16))
        >>> mask.sum(dim=(1, 2, 3)).tolist()
        [16, 16]
    """

    def __init__(self, num_blocks: int = 1, block_size: int = 20, patch_size: int = 128) -> None:
        if num_blocks < 1:
            msg = f"num_blocks must be at least 1, got {num_blocks}"
            raise ValueError(msg)
        if not 0 < block_size <= patch_size:
            msg = f"block_size must be between 1 and patch_size {patch_size}, got {block_size}"
            raise ValueError(msg)
        self.num_blocks = num_blocks
        self.block_size = block_size

    def __call__(
        self, crops: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, P, P)`` -> corrupted crops ``(N, C, P, P)`` and the painted pixels ``(N, 1, P, P)`` bool."""
        return add_masked_blocks(crops, self.num_blocks, self.block_size, generator=generator)
