"""SSIM-AEe: the extended SSIM autoencoder of Rádli & Czúni (2021), §3 and Table 2."""

from __future__ import annotations

from typing import Any

from anomalib_ssimae.models.ssim_ae.lightning_model import SsimAe


class SsimAeExtended(SsimAe):
    """SSIM-AE with the deeper network of Rádli & Czúni (2021) Table 2, trained like SSIM-AE.

    3 x 3 convolutions in four stages 32/64/128/256 (a stride-2 and two stride-1 convolutions each), the same
    8 x 8 latent convolution to ``latent_dim``, a mirrored decoder with output padding and a 4 x 4 stride-2 output
    layer (authors' code). 7,188,165 parameters at 1 channel, d = 100. All arguments as :class:`SsimAe`.
    """

    def __init__(self, network: str = "extended", **kwargs: Any) -> None:
        super().__init__(network=network, **kwargs)
