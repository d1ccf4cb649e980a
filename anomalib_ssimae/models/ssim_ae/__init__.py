"""SSIM autoencoder (Bergmann et al. 2019)."""

from anomalib_ssimae.models.ssim_ae.lightning_model import SsimAe
from anomalib_ssimae.models.ssim_ae.network import SsimAeNetwork
from anomalib_ssimae.models.ssim_ae.torch_model import SsimAeModel

__all__ = ["SsimAe", "SsimAeModel", "SsimAeNetwork"]
