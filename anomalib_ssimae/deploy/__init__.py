"""Deployment: export metadata (:mod:`.export`), prediction records (:mod:`.records`), folder prediction with an
exported OpenVINO model (:mod:`.inference`) and the ``ssimae-predict`` command (:mod:`.cli`)."""

from anomalib_ssimae.data.images import find_images, read_rgb
from anomalib_ssimae.deploy.export import CALIBRATION_FILE, export_metadata, normalized_cut, write_export_metadata
from anomalib_ssimae.deploy.inference import OpenVinoDetector, predict_folder
from anomalib_ssimae.deploy.records import defect_regions, prediction_record

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
