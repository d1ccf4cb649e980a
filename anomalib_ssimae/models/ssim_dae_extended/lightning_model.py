"""SSIM-DAEe: denoising training with the extended network, Rádli & Czúni (2021) §5 — best on their CPU data."""

from __future__ import annotations

from typing import Any

from anomalib_ssimae.models.ssim_dae.lightning_model import SsimDae


class SsimDaeExtended(SsimDae):
    """The extended network of :class:`~anomalib_ssimae.SsimAeExtended` trained as :class:`~anomalib_ssimae.SsimDae`.

    All arguments as :class:`~anomalib_ssimae.SsimAe`; only ``network`` and ``denoising`` default differently.
    """

    def __init__(self, network: str = "extended", **kwargs: Any) -> None:
        super().__init__(network=network, **kwargs)
