"""The autoencoder models of anomalib-ssimae."""

from anomalib_ssimae.models.ssim_ae import SsimAe

__all__ = ["SsimAe"]
