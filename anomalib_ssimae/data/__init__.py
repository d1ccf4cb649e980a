"""Data: training crops (augmentation), masked-block corruption (denoising variants), image-file and mask reading,
and the datamodules ``anomalib_ssimae.data.MVTecAD`` / ``Folder`` (anomalib's, pairing masks by name: ``folders``).

The datamodules are imported on first use (PEP 562 ``__getattr__``), so that :mod:`anomalib_ssimae.data.images`
(``ssimae-predict``) does not import torch or anomalib."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib_ssimae.data.folders import Folder, MVTecAD

__all__ = ["Folder", "MVTecAD"]


def __getattr__(name: str) -> Any:
    """``Folder`` and ``MVTecAD`` from :mod:`anomalib_ssimae.data.folders`, imported on first access. Raises
    ``AttributeError`` for any other name."""
    if name in __all__:
        value = getattr(importlib.import_module("anomalib_ssimae.data.folders"), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
