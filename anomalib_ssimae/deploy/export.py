"""Export: ONNX opset, ``calibration.json`` beside every exported model, the fp16 warning, and threshold changes.

An exported model (``anomalib export``) takes ``input (B, 3, H, W)`` float32 RGB in [0, 1] of any H, W, resizes it
to the model's ``image_size`` inside the graph and returns ``pred_score (B,)`` and ``anomaly_map (B, 1, h, w)``
normalised to [0, 1] (the threshold maps to 0.5), ``pred_label (B,)`` and ``pred_mask (B, 1, h, w)`` booleans, with
``(h, w) = image_size``. Beside the model file, ``calibration.json`` holds the raw thresholds, the normalisation
range and, with :class:`~anomalib_ssimae.post_processing.DefectFreePostProcessor`, the defect-free quantiles, so
that :func:`normalized_cut` can set another threshold or false-positive rate without retraining or re-export.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from anomalib.deploy import CompressionType

from anomalib_ssimae.deploy.records import json_number, write_text_atomic
from anomalib_ssimae.post_processing import FPR_GRID, interpolate_fpr

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
ONNX_OPSET = 18  # the stitching uses Col2Im, opset >= 18


def export_metadata(model: torch.nn.Module) -> dict[str, Any]:
    """What the exported graph bakes in, as plain data (see module docstring): model name, ``image_size``, raw
    image/pixel thresholds, the normalised cuts (``1 - sensitivity``), the normalisation range and, if calibrated on
    defect-free images, the quantiles at :data:`~anomalib_ssimae.post_processing.FPR_GRID`.
    """
    post = model.post_processor
    meta: dict[str, Any] = {
        "model": type(model).__name__,
        "image_size": list(model._image_size),
        "input": "float32 RGB (B, 3, H, W) in [0, 1], any H and W (resized inside to image_size, bilinear, "
        "no antialiasing)",
        "normalized": bool(getattr(post, "enable_normalization", False)),
    }
    if post is None:
        return meta
    meta.update(
        {
            "image_threshold": json_number(post.image_threshold),
            "pixel_threshold": json_number(post.pixel_threshold),
            "image_cut": float(1 - post.image_sensitivity),
            "pixel_cut": float(1 - post.pixel_sensitivity),
            "image_min": json_number(post.image_min),
            "image_max": json_number(post.image_max),
            "pixel_min": json_number(post.pixel_min),
            "pixel_max": json_number(post.pixel_max),
            "post_processor": type(post).__name__,
        }
    )
    if hasattr(post, "image_fpr_quantiles"):
        meta["calibration"] = {
            "image_fpr": post.image_fpr,
            "pixel_fpr": post.pixel_fpr,
            "min_defect_area": post.min_defect_area,
            "defect_free_images": int(post.calibration_images),
            "fpr_grid": FPR_GRID.tolist(),
            "image_fpr_quantiles": [json_number(v) for v in post.image_fpr_quantiles],
            "pixel_fpr_quantiles": [json_number(v) for v in post.pixel_fpr_quantiles],
        }
    return meta


def write_export_metadata(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write :func:`export_metadata` as ``<directory>/calibration.json`` (atomically) and return its path."""
    path = Path(directory) / CALIBRATION_FILE
    write_text_atomic(path, json.dumps(export_metadata(model), indent=2) + "\n")
    return path


def normalized_cut(
    meta: dict[str, Any],
    level: str,
    threshold: float | None = None,
    fpr: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """Cut on the exported (normalised) ``level`` = "image" or "pixel" output for a new raw ``threshold`` or a
    false-positive rate ``fpr`` (needs defect-free calibration); neither keeps the exported cut.

    Returns ``(cut, description)``; outputs strictly above ``cut`` are anomalous. Raises ``ValueError`` when both or
    an impossible request is given: no ``calibration.json``, no calibration for ``fpr``, a zero normalisation range,
    or a threshold outside the normalisation range (where the exported outputs are clamped).
    """
    if threshold is not None and fpr is not None:
        msg = f"give a {level} threshold or a {level} false-positive rate, not both"
        raise ValueError(msg)
    exported = meta.get(f"{level}_cut", 0.5)
    if threshold is None and fpr is None:
        return exported, {"raw": meta.get(f"{level}_threshold"), "normalized": exported, "source": "export"}
    raw, low, high = (meta.get(f"{level}_{key}") for key in ("threshold", "min", "max"))
    if not meta.get("normalized") or None in (raw, low, high):
        msg = (
            f"cannot change the {level} threshold: the export has no {CALIBRATION_FILE} with a threshold and a "
            "normalisation range (export again with this package)"
        )
        raise ValueError(msg)
    if fpr is not None:
        table = (meta.get("calibration") or {}).get(f"{level}_fpr_quantiles")
        if not table or any(v is None for v in table):
            msg = (
                f"{level} false-positive rate requested, but the export has no defect-free calibration: train "
                "with post_processor anomalib_ssimae.post_processing.DefectFreePostProcessor"
            )
            raise ValueError(msg)
        threshold = interpolate_fpr(table, fpr)
    if not high > low:
        msg = f"the {level} normalisation range of the export is empty ({low} .. {high}): the threshold is fixed"
        raise ValueError(msg)
    cut = (threshold - raw) / (high - low) + exported
    if not 0 <= cut < 1:
        msg = (
            f"{level} threshold {threshold:.6g} lies outside the range the exported {level} outputs can express "
            f"({raw - exported * (high - low):.6g} .. {raw + (1 - exported) * (high - low):.6g}, where they are "
            "clamped); re-export after DefectFreePostProcessor.set_false_positive_rates"
        )
        raise ValueError(msg)
    source = f"{level}_fpr={fpr:g}" if fpr is not None else "user"
    return cut, {"raw": threshold, "normalized": cut, "source": source}


class CalibratedExportMixin:
    """anomalib's ``to_onnx``/``to_openvino``/``to_torch`` plus ``calibration.json`` beside the model file.

    Mixed into :class:`~anomalib_ssimae.SsimAe` before ``AnomalibModule``. ONNX defaults to opset 18; fp16
    OpenVINO compression warns, because it also rounds the baked thresholds and normalisation constants (a score
    moved 0.59 -> 0.67 in a trial).
    """

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """anomalib's ONNX export (opset 18 unless given) plus ``calibration.json``."""
        kwargs.setdefault("opset_version", ONNX_OPSET)
        path = super().to_onnx(export_root, model_file_name, input_size, **kwargs)
        logger.info("export metadata: %s", write_export_metadata(self, path.parent))
        return path

    def to_openvino(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        compression_type: CompressionType | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Path:
        """anomalib's OpenVINO export plus ``calibration.json``; warns on fp16 compression."""
        if compression_type == CompressionType.FP16:
            warnings.warn(
                "fp16 compression stores the thresholds and normalisation range in fp16 too, which changes scores "
                "and masks (see README, Deployment); run the f32 model with INFERENCE_PRECISION_HINT f32 instead.",
                stacklevel=2,
            )
        path = super().to_openvino(export_root, model_file_name, input_size, compression_type, *args, **kwargs)
        logger.info("export metadata: %s", write_export_metadata(self, path.parent))
        return path

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """anomalib's pickled torch export plus ``calibration.json``."""
        path = super().to_torch(export_root, model_file_name)
        logger.info("export metadata: %s", write_export_metadata(self, path.parent))
        return path
