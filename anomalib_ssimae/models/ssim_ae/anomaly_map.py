"""Residual (anomaly) map and image anomaly score of the SSIM autoencoder.

The residual follows Rádli & Czúni (2021) Eq. 8 and Bergmann et al. (2019) §3: 1 - SSIM between an image and its
reconstruction, per pixel. The image score is not defined by either paper (they evaluate pixels); the options here
were compared on four datasets in ``benchmarks/results/image_scores.md``. Optionally the map is divided by the
residual that defect-free images show at each position (:class:`PositionNormalization`), which removes the raised
residual along the image border and under uneven lighting (``benchmarks/results/position_normalization.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_ssimae.components.ssim import ssim_map

RESIDUALS = ("ssim", "l2", "ssim_l2")
SCORES = ("max", "mean", "top_mean")


def residual_map(image: torch.Tensor, reconstruction: torch.Tensor, residual: str = "ssim") -> torch.Tensor:
    """Per-pixel residual between an image and its reconstruction, averaged over channels.

    Args:
        image, reconstruction: ``(B, C, H, W)`` in [0, 1], ``H, W >= 11``.
        residual: ``"ssim"``: 1 - SSIM map (Gaussian window 11, Rádli & Czúni Eq. 8 without the factor 1/2), in
            [0, 2], from windows inside the image only (the 5 border pixels repeat the nearest window's value:
            reflect padding raised the residual at the image edge, ``benchmarks/results/border.md``);
            ``"l2"``: squared error, in [0, 1]; ``"ssim_l2"``: their sum, in [0, 3].

    Returns:
        ``(B, 1, H, W)`` float32, 0 where the reconstruction equals the image.

    Raises:
        ValueError: for an unknown ``residual``.
    """
    if residual not in RESIDUALS:
        msg = f"residual must be one of {RESIDUALS}, got {residual!r}"
        raise ValueError(msg)
    out = torch.zeros_like(image[:, :1], dtype=torch.float32)
    if residual in {"ssim", "ssim_l2"}:
        out = out + (1 - ssim_map(image, reconstruction, padding="replicate")).mean(dim=1, keepdim=True)
    if residual in {"l2", "ssim_l2"}:
        out = out + (image.float() - reconstruction.float()).pow(2).mean(dim=1, keepdim=True)
    return out


class SeparableGaussianBlur(nn.Module):
    """Gaussian blur of ``(B, 1, H, W)`` maps as two 1-D convolutions with reflect padding.

    Same kernel (``2 * int(4 * sigma + 0.5) + 1`` taps) and border as anomalib's ``GaussianBlur2d``, whose full 2-D
    convolution cost 129 x 129 multiplications per pixel at sigma 16 (about 0.3 s for a 512 x 208 map on a CPU
    core); two 1-D passes cost 2 x 129. The kernel is derived from ``sigma``, so it is not saved in checkpoints.

    ``sigma`` 0 leaves the map as it is (a one-tap kernel of 1).

    Raises:
        ValueError: if ``sigma`` is negative.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma < 0:
            msg = f"score_sigma must be >= 0, got {sigma}"
            raise ValueError(msg)
        radius = int(4 * sigma + 0.5)
        taps = torch.ones(1) if sigma == 0 else torch.exp(-(torch.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
        self.register_buffer("kernel", taps / taps.sum(), persistent=False)
        self.radius = radius

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> blurred ``(B, 1, H, W)``; ``H, W`` must exceed the kernel radius (reflect padding)."""
        r = self.radius
        padded = F.pad(maps, (r, r, r, r), mode="reflect")
        rows = F.conv2d(padded, self.kernel.view(1, 1, -1, 1).to(maps.dtype))
        return F.conv2d(rows, self.kernel.view(1, 1, 1, -1).to(maps.dtype))


class PositionNormalization(nn.Module):
    """Divide residual maps by the residual defect-free images show at each position.

    Autoencoder residuals are not uniform over the image: patch edges, fewer overlapping patches near the border and
    uneven lighting raise them along the border (up to 1.33x the interior on BSData). After :meth:`fit` on the
    residual maps of defect-free (training) images, ``forward`` multiplies a map by
    ``weight = level / max(expected, floor * level)``, where ``expected`` is their mean map smoothed by a Gaussian of
    ``sigma`` px and ``level`` its overall mean: a defect-free map becomes flat at its usual level, and ``floor``
    caps the gain (at 1 / ``floor``) where defect-free images have almost no residual (saturated or blank areas).
    Before :meth:`fit` the weight is 1. The weight is a buffer, so checkpoints and exported graphs carry it.

    Args:
        image_size: ``(height, width)`` of the maps, in pixels.
        sigma: Gaussian sigma of the expected map, in pixels (4 was best of 0/4/16 on BSData and grid).
        floor: lowest expected residual, as a fraction of ``level``, in (0, 1].

    Shapes: ``(B, 1, H, W)`` -> ``(B, 1, H, W)``; a map of another size uses the weight resized bilinearly.

    Example:
        >>> normalization = PositionNormalization((32, 32), sigma=1.0)
        >>> expected = torch.full((1, 1, 32, 32), 0.1)
        >>> expected[..., :4] = 0.2  # a brighter left border
        >>> normalization.fit(expected.expand(8, 1, 32, 32))
        >>> flat = normalization(expected)
        >>> round(float(flat[..., :2].mean() / flat[..., 16:].mean()), 2)
        1.0
    """

    def __init__(self, image_size: tuple[int, int], sigma: float = 4.0, floor: float = 0.25) -> None:
        super().__init__()
        if not 0 < floor <= 1:
            msg = f"floor must be in (0, 1], got {floor}"
            raise ValueError(msg)
        self.floor = floor
        self.blur = SeparableGaussianBlur(sigma)
        self.register_buffer("weight", torch.ones(1, 1, *image_size))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, residual_maps: torch.Tensor) -> None:
        """Set the weight from residual maps ``(N, 1, H, W)`` of defect-free images (``H, W`` = ``image_size``)."""
        expected = self.blur(residual_maps.float().mean(dim=0, keepdim=True))
        level = expected.mean()
        if level > 0:  # all-zero maps (perfect reconstructions) leave the weight at 1
            self.weight.copy_(level / expected.clamp_min(self.floor * level))
        self.fitted.fill_(True)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Weighted maps ``(B, 1, H, W)``."""
        weight = self.weight
        if weight.shape[-2:] != maps.shape[-2:]:
            weight = F.interpolate(weight, size=maps.shape[-2:], mode="bilinear", align_corners=False)
        return maps * weight


class AnomalyMapGenerator(nn.Module):
    """Residual map and image score from an image and its reconstruction.

    Args:
        residual: see :func:`residual_map`.
        score: image anomaly score from the map: ``"max"``, the maximum of the map smoothed by a Gaussian of
            ``score_sigma`` px (a defect-sized region rather than one noisy pixel); ``"mean"``, the mean of the map;
            ``"top_mean"``, the mean of the highest ``score_fraction`` of its pixels.
        score_sigma: Gaussian sigma in pixels for ``"max"`` (default 16: the best image AUROC over the datasets
            compared in ``benchmarks/results/image_scores.md``); 0 takes the maximum of the map itself, for defects
            of a few pixels (DeepPCB's pin-holes and spurs).
        score_fraction: fraction of pixels in (0, 1] for ``"top_mean"``.
        position_normalization: ``(height, width)`` of the maps to add a :class:`PositionNormalization` (applied
            before the score), or ``None`` for the plain residual (the papers' map).

    ``forward(image, reconstruction)``: ``(B, C, H, W)`` each, in [0, 1] -> ``(anomaly_map (B, 1, H, W) float32,
    pred_score (B,) float32)``, both in the residual's range (e.g. [0, 2] for SSIM).

    Raises:
        ValueError: for an unknown ``residual`` or ``score``, or ``score_fraction`` outside (0, 1].
    """

    def __init__(
        self,
        residual: str = "ssim",
        score: str = "max",
        score_sigma: float = 16.0,
        score_fraction: float = 0.01,
        position_normalization: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if residual not in RESIDUALS:
            msg = f"residual must be one of {RESIDUALS}, got {residual!r}"
            raise ValueError(msg)
        if score not in SCORES:
            msg = f"score must be one of {SCORES}, got {score!r}"
            raise ValueError(msg)
        if not 0 < score_fraction <= 1:
            msg = f"score_fraction must be in (0, 1], got {score_fraction}"
            raise ValueError(msg)
        self.residual = residual
        self.score = score
        self.score_sigma = score_sigma
        self.score_fraction = score_fraction
        self.blur = SeparableGaussianBlur(score_sigma)
        self.position = PositionNormalization(position_normalization) if position_normalization else None

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if maps of ``height x width`` pixels are too small for the ``"max"`` score's blur."""
        if self.score == "max" and min(height, width) <= self.blur.radius:
            msg = (
                f"score_sigma {self.score_sigma} is too large for image_size {height} x {width}: the smoothing "
                f"kernel radius ({self.blur.radius} px) must be smaller than every image side"
            )
            raise ValueError(msg)

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B,)`` (see the class docstring)."""
        if self.score == "max":
            return self.blur(anomaly_map).amax(dim=(1, 2, 3))
        flat = anomaly_map.flatten(1)
        if self.score == "mean":
            return flat.mean(dim=1)
        k = max(1, round(flat.shape[1] * self.score_fraction))
        return flat.topk(k, dim=1).values.mean(dim=1)

    def position_free_map(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """The residual map ``(B, 1, H, W)`` before any position normalisation (what that normalisation is fitted on)."""
        return residual_map(image, reconstruction, self.residual)

    def forward(self, image: torch.Tensor, reconstruction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly map and image score (see the class docstring)."""
        anomaly_map = self.position_free_map(image, reconstruction)
        if getattr(self, "position", None) is not None:  # torch exports of 0.2.0 pickled no such attribute
            anomaly_map = self.position(anomaly_map)
        return anomaly_map, self.image_score(anomaly_map)
