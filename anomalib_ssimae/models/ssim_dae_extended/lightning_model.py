"""SSIM-DAEe: denoising training with the extended network, Rádli & Czúni (2021) §5 — best on their CPU data."""

from __future__ import annotations

from anomalib_ssimae.models.ssim_ae.torch_model import SSIM_AE_EXTENDED_ENCODER
from anomalib_ssimae.models.ssim_dae.lightning_model import SsimDae


class SsimDaeExtended(SsimDae):
    """The extended network of :class:`~anomalib_ssimae.SsimAeExtended` trained as :class:`~anomalib_ssimae.SsimDae`."""

    encoder = SSIM_AE_EXTENDED_ENCODER
    output_kernel = 4
