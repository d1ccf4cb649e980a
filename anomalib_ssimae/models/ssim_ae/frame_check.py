"""Out-of-distribution frames: an image whose intensity histogram is unlike every defect-free training image.

An autoencoder reconstructs a flat image almost perfectly, and SSIM barely sees a global change of brightness or
polarity, so a blank, white, inverted or badly exposed frame gets a small residual and is called normal (a blank grey
frame scored 0.0 on the quickstart model, image AUROC 0.92). On a line that is a camera failure, a missing part or a
wrong exposure passing as a good part. Not in the papers (an addition of this package): :class:`FrameCheck` compares
each image's intensity histogram with those of the defect-free training images and calls a frame out of
distribution when its distance to the nearest of them exceeds ``margin`` times the largest such distance among the
training images themselves (each to its nearest other one), and at least :data:`FLOOR`. Nearest rather than mean: lighting sets (magnetic tile)
and binarised boards (DeepPCB) make several kinds of defect-free histogram, whose mean is like none of them.
False-alarm rates on the six datasets' defect-free test images and detection of the synthetic frames:
``benchmarks/results/frame_check.md`` (``python benchmarks/quality/frame_check.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

BINS = 32  # histogram bins over [0, 1]
SAMPLES = 128  # the histogram reads at most about SAMPLES x SAMPLES pixels per image (a strided subsample)
MEMORY = 256  # training histograms kept (evenly spaced over the training images; fewer are repeated)
FLOOR = 0.3  # no distance below it is out of distribution: training sets of near-identical frames (MVTec 3D tire)
# set a limit their own defect-free test images exceed (benchmarks/results/frame_check.md)


class FrameCheck(nn.Module):
    """Intensity histogram distance of whole images to the defect-free training images.

    Args:
        channels: channels of the images it sees (the network's input: 1 or 3).
        margin: a frame is out of distribution when its distance exceeds ``margin`` x the largest distance of a
            training image to its nearest other training image (and :data:`FLOOR`); at least 1.

    Shapes: :meth:`distance` maps ``(B, C, H, W)`` in [0, 1] to ``(B,)`` in [0, 2] (the L1 distance of two
    histograms, averaged over channels, to the nearest training histogram); ``forward`` to ``(B,)`` booleans, all
    ``False`` before :meth:`fit`. The training histograms ``(MEMORY, C, BINS)``, the ``limit`` and ``fitted`` are
    buffers, so checkpoints and exported graphs carry them.

    Example:
        >>> check = FrameCheck(channels=1)
        >>> texture = torch.rand(8, 1, 64, 64) * 0.6 + 0.2  # defect-free images: grey levels 0.2 .. 0.8
        >>> check.fit([texture])
        >>> check(torch.cat([texture[:1], torch.full((1, 1, 64, 64), 0.5)])).tolist()  # a good and a blank frame
        [False, True]
    """

    def __init__(self, channels: int, margin: float = 2.0) -> None:
        super().__init__()
        if margin < 1:
            msg = f"margin must be at least 1, got {margin}"
            raise ValueError(msg)
        self.margin = margin
        self.register_buffer("memory", torch.full((MEMORY, channels, BINS), 1 / BINS))
        self.register_buffer("limit", torch.tensor(2.0))
        self.register_buffer("fitted", torch.tensor(False))

    @staticmethod
    def histogram(images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, C, BINS)``: the fraction of pixels per grey-level bin, over a strided
        subsample of at most about ``SAMPLES`` x ``SAMPLES`` pixels (every pixel's value, not an average, so that a
        fine texture is not flattened into a blank frame)."""
        step_h, step_w = max(1, images.shape[-2] // SAMPLES), max(1, images.shape[-1] // SAMPLES)
        pixels = images[..., ::step_h, ::step_w].flatten(2).clamp(0, 1)
        index = (pixels * BINS).floor().clamp(max=BINS - 1)
        bins = torch.arange(BINS, device=images.device, dtype=index.dtype).view(1, 1, BINS, 1)
        return (index.unsqueeze(2) == bins).to(images.dtype).mean(dim=-1)

    @staticmethod
    def _distances(histograms: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``(B, C, BINS)``, ``(M, C, BINS)`` -> ``(B, M)`` L1 distances averaged over channels."""
        return (histograms.unsqueeze(1) - memory.unsqueeze(0)).abs().sum(dim=-1).mean(dim=-1)

    def distance(self, images: torch.Tensor) -> torch.Tensor:
        """L1 distance of each image's histogram to the nearest training histogram, ``(B,)`` in [0, 2]."""
        return self._distances(self.histogram(images), self.memory.to(images.dtype)).amin(dim=1)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit on batches of defect-free images ``(B, C, H, W)`` in [0, 1], as :meth:`distance` will see them.

        Raises:
            ValueError: when fewer than 2 images are given (one image has no nearest other one).
        """
        histograms = torch.cat([self.histogram(images.float()) for images in batches])
        if len(histograms) < 2:
            msg = f"the frame check needs at least 2 defect-free training images, got {len(histograms)}"
            raise ValueError(msg)
        if len(histograms) > MEMORY:
            histograms = histograms[torch.linspace(0, len(histograms) - 1, MEMORY).round().long()]
        distances = self._distances(histograms, histograms)
        distances.fill_diagonal_(float("inf"))
        self.limit.fill_(max(float(distances.amin(dim=1).max()) * self.margin, FLOOR))
        self.memory.copy_(histograms[torch.arange(MEMORY) % len(histograms)].to(self.memory.dtype))
        self.fitted.fill_(True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` booleans: out of distribution (always ``False`` before :meth:`fit`)."""
        return (self.distance(images) > self.limit) & self.fitted
