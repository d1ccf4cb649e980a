"""SSIM-DAE: the denoising SSIM autoencoder of Rádli & Czúni (2021), §5 (Eq. 3-4)."""

from __future__ import annotations

from typing import Any

from anomalib_ssimae.models.ssim_ae.lightning_model import SsimAe


class SsimDae(SsimAe):
    """SSIM-AE network trained to reconstruct clean crops from crops with masked blocks.

    Defaults follow the paper: one 20 x 20 block per crop (``num_blocks``, ``block_size``) in the crop's dominant
    colour, Eq. 4 weighting with ``alpha`` = ``beta`` = 1, applied to the per-pixel SSIM loss (1 - SSIM map)/2 as
    the authors' code trains with SSIM. ``loss: l2`` is Eq. 4 as printed (squared error); on grid it stayed at a
    flat mean-grey output for 200 steps (``benchmarks/studies/loss_stall.py``), so it is not the default. Inference is that
    of SSIM-AE (no corruption). All arguments as :class:`SsimAe`; only ``denoising`` defaults differently.
    """

    def __init__(self, denoising: bool = True, **kwargs: Any) -> None:
        super().__init__(denoising=denoising, **kwargs)
