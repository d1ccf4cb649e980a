"""anomalib-ssimae: SSIM autoencoders for unsupervised visual defect detection, as anomalib models.

Use the models from YAML as ``class_path: anomalib_ssimae.SsimAe`` (or ``SsimAeExtended``, ``SsimDae``,
``SsimDaeExtended``).
"""

from anomalib_ssimae.models import SsimAe, SsimAeExtended, SsimDae, SsimDaeExtended

__all__ = ["SsimAe", "SsimAeExtended", "SsimDae", "SsimDaeExtended"]
__version__ = "0.3.0"
