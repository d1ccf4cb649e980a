"""anomalib-ssimae: SSIM autoencoders for unsupervised visual defect detection, as anomalib models.

Use the models from YAML as ``class_path: anomalib_ssimae.SsimAe``.
"""

from anomalib_ssimae.models import SsimAe

__all__ = ["SsimAe"]
__version__ = "0.1.0"
