"""Structural similarity (SSIM) maps, as used by the SSIM autoencoder.

SSIM with an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03 and a data range of 1, as in
Bergmann et al. (2019) and Rádli & Czúni (2021) Eq. 7. The values equal ``pytorch_msssim.ssim`` (``padding="valid"``)
and ``kornia.metrics.ssim`` (``padding="same"``, reflect border) to float32 precision; the tests check both.

Why not call those libraries directly: the Gaussian filter is applied here as two matrix products with banded
matrices, which was 9x faster than pytorch-msssim for the forward + backward of a training batch on a 2-core
AVX-512 CPU when this module was written, and the SSIM loss, not the network, dominated the authors' training step.
The map is always computed in float32, also under bf16 autocast: its ``E[x^2] - E[x]^2`` terms cancel
catastrophically in bf16 (an SSIM map moved by 0.05 in a trial).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anomalib_ssimae.precision import full_fp32


def _gaussian_band(size: int, window: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Banded matrix ``(size - window + 1, size)`` whose rows apply a normalised 1-D Gaussian ("valid" filtering)."""
    coords = torch.arange(window, dtype=torch.float32, device=device) - (window - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    offset = torch.arange(size, device=device)[None, :] - torch.arange(size - window + 1, device=device)[:, None]
    inside = (offset >= 0) & (offset < window)
    return torch.where(inside, kernel[offset.clamp(0, window - 1)], torch.zeros((), device=device))


def ssim_map(
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    padding: str = "same",
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-pixel SSIM between two images with values in [0, 1].

    Args:
        image: ``(B, C, H, W)``, values in [0, 1].
        reconstruction: same shape as ``image``.
        window_size: side of the Gaussian window in pixels (odd).
        sigma: standard deviation of the Gaussian window in pixels.
        padding: ``"valid"`` gives ``(B, C, H - window_size + 1, W - window_size + 1)``, one value per window that
            fits inside the image; ``"replicate"`` computes the same valid windows and gives each of the
            ``window_size // 2`` border pixels the value of the nearest valid window (which contains it), so the
            map is ``(B, C, H, W)`` and no padded content enters it; ``"same"`` pads both inputs by reflection
            (kornia's map), which raised the residual at the image border (``benchmarks/results/border.md``).
        k1, k2: stabilising constants; C1 = k1^2, C2 = k2^2 for a data range of 1.

    Returns:
        SSIM map, float32, values in [-1, 1] (1 where the images are identical).

    Raises:
        ValueError: if the shapes differ, the window is even, or an image side is smaller than the window.
    """
    if image.shape != reconstruction.shape:
        msg = f"SSIM needs two images of the same shape, got {tuple(image.shape)} and {tuple(reconstruction.shape)}"
        raise ValueError(msg)
    if window_size % 2 == 0:
        msg = f"SSIM window_size must be odd, got {window_size}"
        raise ValueError(msg)
    if padding not in {"same", "valid", "replicate"}:
        msg = f"padding must be 'same', 'valid' or 'replicate', got {padding!r}"
        raise ValueError(msg)
    with torch.autocast(device_type=image.device.type, enabled=False), full_fp32(image.device.type):  # not TF32
        x = image.float()
        y = reconstruction.float()
        if padding == "same":
            pad = (window_size // 2,) * 4
            x, y = F.pad(x, pad, mode="reflect"), F.pad(y, pad, mode="reflect")
        height, width = x.shape[-2:]
        if min(height, width) < window_size:
            msg = f"SSIM window {window_size} does not fit an image of {height} x {width} pixels"
            raise ValueError(msg)
        band_h = _gaussian_band(height, window_size, sigma, x.device)
        band_w = _gaussian_band(width, window_size, sigma, x.device)
        # (Co)variances are E[xy] - E[x]E[y], which cancels in float32 where the image is flat; shifting both
        # images by the same per-image constant leaves them unchanged and shrinks the cancelling terms: the residual
        # difference between torch and ONNX Runtime on the same reconstruction fell from 2.2e-4 to 4e-5.
        shift = x.mean(dim=(-2, -1), keepdim=True)
        x, y = x - shift, y - shift
        # The five local statistics in one filtering pass: band_h @ S @ band_w^T.
        stats = band_h @ torch.cat([x, y, x * x, y * y, x * y], dim=1) @ band_w.T
        mu_x, mu_y, e_xx, e_yy, e_xy = stats.chunk(5, dim=1)
        c1, c2 = k1**2, k2**2
        var_x, var_y, cov_xy = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
        mu_x, mu_y = mu_x + shift, mu_y + shift
        numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
        denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
        ssim = numerator / denominator
        if padding == "replicate":
            ssim = F.pad(ssim, (window_size // 2,) * 4, mode="replicate")
        return ssim
