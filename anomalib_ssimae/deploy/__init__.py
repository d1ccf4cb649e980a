"""Deployment, the package's end point: folder prediction with an exported OpenVINO model (:mod:`.inference`) and the
``ssimae-predict`` command (:mod:`.cli`), with the records (:mod:`anomalib_ssimae.records`) and ``calibration.json``
reading (:mod:`anomalib_ssimae.calibration`) that they share with training; nothing else in the package imports it.

Prediction with an exported model needs OpenVINO, NumPy and Pillow only (the ``deploy`` extra; on a machine that
only runs exported models, ``pip install --no-deps anomalib-ssimae`` plus those): :mod:`.cli`, :mod:`.inference`,
:mod:`anomalib_ssimae.records` and :mod:`anomalib_ssimae.calibration` import no torch, Lightning, anomalib or SciPy.
``export_metadata`` and ``write_export_metadata`` (:mod:`anomalib_ssimae.models.ssim_ae.export_metadata`) need
torch; they are imported from here on first use (PEP 562 ``__getattr__``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from anomalib_ssimae.calibration import CALIBRATION_FILE, normalized_cut
from anomalib_ssimae.data.images import find_images, read_rgb
from anomalib_ssimae.deploy.inference import OpenVinoDetector, predict_folder
from anomalib_ssimae.records import defect_regions, prediction_record

if TYPE_CHECKING:
    from anomalib_ssimae.models.ssim_ae.export_metadata import export_metadata, write_export_metadata

_FROM_EXPORT = ("export_metadata", "write_export_metadata")  # need torch: imported on first access


def __getattr__(name: str) -> Any:
    """``export_metadata`` and ``write_export_metadata`` from :mod:`anomalib_ssimae.models.ssim_ae.export_metadata`
    (which imports torch and anomalib), imported on first access. Raises ``AttributeError`` for any other name."""
    if name in _FROM_EXPORT:
        value = getattr(importlib.import_module("anomalib_ssimae.models.ssim_ae.export_metadata"), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CALIBRATION_FILE",
    "OpenVinoDetector",
    "defect_regions",
    "export_metadata",
    "find_images",
    "normalized_cut",
    "predict_folder",
    "prediction_record",
    "read_rgb",
    "write_export_metadata",
]
