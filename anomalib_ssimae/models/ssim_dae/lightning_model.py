"""SSIM-DAE: the denoising SSIM autoencoder of Rádli & Czúni (2021), §5 (Eq. 3-4)."""

from __future__ import annotations

from typing import Any

from anomalib_ssimae.models.ssim_ae.lightning_model import SsimAe


class SsimDae(SsimAe):
    """SSIM-AE network trained to reconstruct clean crops from crops with masked blocks.

    Defaults follow the paper: one 20 x 20 block per crop in the crop's dominant colour, loss Eq. 4 (L2,
    alpha = beta = 1). ``loss: ssim`` uses the per-pixel SSIM map instead, with the same weighting. Inference is
    that of SSIM-AE (no corruption). All other arguments as :class:`SsimAe`.
    """

    def __init__(
        self,
        denoising: bool = True,
        loss: str = "l2",
        num_blocks: int = 1,
        block_size: int = 20,
        alpha: float = 1.0,
        beta: float = 1.0,
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(
            denoising=denoising,
            loss=loss,
            num_blocks=num_blocks,
            block_size=block_size,
            alpha=alpha,
            beta=beta,
            **kwargs,
        )
