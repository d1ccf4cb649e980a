"""What an exported SSIM-AE graph bakes in, as plain data: ``calibration.json`` beside every exported model.

An exported model (``anomalib export``) takes ``input (B, 3, H, W)`` float32 RGB in [0, 1] of any H, W, resizes it
to the model's ``image_size`` inside the graph and returns ``pred_score (B,)`` and ``anomaly_map (B, 1, h, w)``
normalised to [0, 1] (the threshold maps to 0.5), ``pred_label (B,)`` and ``pred_mask (B, 1, h, w)`` booleans, with
``(h, w) = image_size``. Beside the model file, ``calibration.json`` (:func:`write_export_metadata`) holds the raw
thresholds, the normalisation range and, with :class:`~anomalib_ssimae.post_processing.DefectFreePostProcessor`, the
defect-free quantiles, so that :func:`~anomalib_ssimae.calibration.normalized_cut` can set another threshold or
false-positive rate without retraining or re-export. What reads ``calibration.json`` needs no torch and lives in
:mod:`anomalib_ssimae.calibration`; the export itself is :class:`~anomalib_ssimae.models.ssim_ae.export.CalibratedExportMixin`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from anomalib_ssimae.calibration import CALIBRATION_FILE, graph_fingerprint
from anomalib_ssimae.fpr import FPR_GRID
from anomalib_ssimae.models.ssim_ae.frame_check import BINS, SAMPLES
from anomalib_ssimae.records import json_number, write_text_atomic


def graph_image_size(model: torch.nn.Module) -> list[int] | None:
    """``[height, width]`` the exported graph resizes its input to: the size the model's export transform gives a
    dummy image (anomalib exports ``pre_processor.export_transform``); ``None`` when the graph does not resize."""
    pre = getattr(model, "pre_processor", None)
    transform = getattr(pre, "export_transform", None) or getattr(pre, "transform", None)
    if transform is None:
        return None
    size = transform(torch.zeros(1, 3, 1, 1)).shape[-2:]
    return None if tuple(size) == (1, 1) else [int(size[0]), int(size[1])]


def export_metadata(model: torch.nn.Module) -> dict[str, Any]:
    """What the exported graph bakes in, as plain data (see module docstring): model name, ``image_size`` (what the
    graph resizes to, read from its pre-processor), raw image/pixel thresholds, the normalised cuts
    (``1 - sensitivity``), the normalisation range and, if calibrated on defect-free images, the quantiles at
    :data:`~anomalib_ssimae.post_processing.FPR_GRID`; the fitted frame check's training histograms and limit
    (``frame_check``), so that ``ssimae-predict`` can say why a frame was rejected.
    """
    post = model.post_processor
    meta: dict[str, Any] = {
        "model": type(model).__name__,
        "image_size": graph_image_size(model),
        "input": "float32 RGB (B, 3, H, W) in [0, 1], any H and W (resized inside to image_size, bilinear, "
        "no antialiasing)",
        "normalized": bool(getattr(post, "enable_normalization", False)),
    }
    check = getattr(getattr(model, "model", None), "frame_check", None)
    if check is not None and bool(check.fitted):  # for the reason in ssimae-predict's records (deploy/frame_check.py)
        meta["frame_check"] = {
            "limit": float(check.limit),
            "bins": BINS,
            "samples": SAMPLES,
            "channels": int(check.memory.shape[1]),
            "standardize": getattr(model.model, "intensity_normalization", "none") == "standardize",
            "memory": [
                [[round(v, 6) for v in channel] for channel in h]
                for h in torch.unique(check.memory, dim=0).cpu().tolist()  # one copy, not one sync per value
            ],
        }
    quantization = getattr(model, "_quantization", None)
    if quantization:
        meta["quantization"] = quantization
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


def write_export_metadata(model: torch.nn.Module, model_path: str | Path) -> Path:
    """Write :func:`export_metadata` plus the exported graph's :func:`graph_fingerprint` (``graph_sha256``) as
    ``calibration.json`` beside ``model_path`` (atomically) and return its path."""
    path = Path(model_path).parent / CALIBRATION_FILE
    meta = export_metadata(model) | {"graph_sha256": graph_fingerprint(model_path)}
    write_text_atomic(path, json.dumps(meta, indent=2) + "\n")
    return path
