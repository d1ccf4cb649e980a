"""SsimDae."""

from anomalib_ssimae.models.ssim_dae.lightning_model import SsimDae

__all__ = ["SsimDae"]
