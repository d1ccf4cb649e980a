"""The autoencoder models of anomalib-ssimae: SSIM-AE, SSIM-AEe, SSIM-DAE, SSIM-DAEe."""

from anomalib_ssimae.models.ssim_ae import SsimAe
from anomalib_ssimae.models.ssim_ae_extended import SsimAeExtended
from anomalib_ssimae.models.ssim_dae import SsimDae
from anomalib_ssimae.models.ssim_dae_extended import SsimDaeExtended

__all__ = ["SsimAe", "SsimAeExtended", "SsimDae", "SsimDaeExtended"]
