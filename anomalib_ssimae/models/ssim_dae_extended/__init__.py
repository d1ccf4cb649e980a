"""SsimDaeExtended."""

from anomalib_ssimae.models.ssim_dae_extended.lightning_model import SsimDaeExtended

__all__ = ["SsimDaeExtended"]
