"""SsimAeExtended."""

from anomalib_ssimae.models.ssim_ae_extended.lightning_model import SsimAeExtended

__all__ = ["SsimAeExtended"]
