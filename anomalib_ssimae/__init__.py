"""anomalib-ssimae: SSIM autoencoders for unsupervised visual defect detection, as anomalib models.

Use the models from YAML as ``class_path: anomalib_ssimae.SsimAe`` (or ``SsimAeExtended``, ``SsimDae``,
``SsimDaeExtended``).

The models are imported on first use (PEP 562 ``__getattr__``): ``import anomalib_ssimae.deploy.cli``
(``ssimae-predict``) and the other torch-free modules (:mod:`anomalib_ssimae.fpr`,
:mod:`anomalib_ssimae.data.images`) do not import torch, Lightning or anomalib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib_ssimae.models import SsimAe, SsimAeExtended, SsimDae, SsimDaeExtended

__all__ = ["SsimAe", "SsimAeExtended", "SsimDae", "SsimDaeExtended"]
__version__ = "0.4.0"


def __getattr__(name: str) -> Any:
    """``anomalib_ssimae.SsimAe`` (and the other models of :data:`__all__`) from :mod:`anomalib_ssimae.models`,
    imported on first access. Raises ``AttributeError`` for any other name."""
    if name in __all__:
        value = getattr(importlib.import_module("anomalib_ssimae.models"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
