"""Prediction records: defect regions, the JSON-lines record, overlay pictures, JSON numbers and atomic writes.

Shared by ``anomalib predict`` (:class:`~anomalib_ssimae.callbacks.PredictionRecords`) and ``ssimae-predict``
(:mod:`anomalib_ssimae.deploy.inference`), so both write the same record.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.visualization.image.functional import overlay_images, visualize_anomaly_map, visualize_mask
from PIL import Image
from scipy import ndimage


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    umask = os.umask(0)
    os.umask(umask)
    Path(tmp.name).chmod(0o666 & ~umask)  # readable like any other file, not the temp file's 0600
    Path(tmp.name).replace(path)


def defect_regions(mask: np.ndarray, size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Connected defect regions of a predicted mask.

    ``mask``: ``(h, w)`` bool at model resolution; ``size``: ``(height, width)`` of the original image, to which the
    mask is scaled (nearest neighbour) first. Regions are 8-connected, largest first, each
    ``{"area": pixels, "bbox": [x_min, y_min, x_max, y_max]}`` in original-image pixels (inclusive).
    """
    mask = np.asarray(mask, dtype=bool).reshape(np.asarray(mask).shape[-2:])
    if size is not None and tuple(size) != mask.shape:
        mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST), dtype=bool)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return []
    areas = np.bincount(labels.ravel())[1:]
    boxes = ndimage.find_objects(labels)
    regions = [
        {
            "area": int(areas[i]),
            "bbox": [int(box[1].start), int(box[0].start), int(box[1].stop - 1), int(box[0].stop - 1)],
        }
        for i, box in enumerate(boxes)
    ]
    return sorted(regions, key=lambda region: -region["area"])


def prediction_record(
    image_path: str | Path,
    size: tuple[int, int],
    score: float,
    label: bool | None,
    mask: np.ndarray | None,
    thresholds: dict[str, Any] | None,
    overlay: str | Path | None = None,
) -> dict[str, Any]:
    """One JSON-lines record: ``image``, ``width``, ``height``, ``anomaly_score`` (normalised, in [0, 1]),
    ``label`` ("anomalous"/"normal"; ``None`` when the model has no threshold), ``threshold`` (what decided the
    label and mask), ``regions`` (:func:`defect_regions` in original pixels) and ``overlay`` (the picture, if any).
    """
    return {
        "image": str(image_path),
        "width": int(size[1]),
        "height": int(size[0]),
        "anomaly_score": round(float(score), 6),
        "label": None if label is None else ("anomalous" if bool(label) else "normal"),
        "threshold": thresholds,
        "regions": defect_regions(mask, size) if mask is not None else [],
        "overlay": str(overlay) if overlay is not None else None,
    }


def overlay_picture(image: Image.Image, anomaly_map: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The image with the anomaly map (jet colours, alpha 0.4) and the predicted mask's contour (red) on top, at
    the image's own size. ``anomaly_map``, ``mask``: ``(h, w)``, normalised map in [0, 1] and bool.
    """
    size = image.size
    heat = visualize_anomaly_map(np.asarray(anomaly_map, dtype=np.float32), colormap=True).resize(size)
    contour = visualize_mask(
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(size, Image.NEAREST),
        mode="contour",
        color=(255, 0, 0),
    )
    return overlay_images(image, [heat, contour], alpha=[0.4, 1.0])


def json_number(value: torch.Tensor | float | None) -> float | None:
    """A scalar tensor or float as a JSON number; ``None`` for a missing or NaN value."""
    value = float(value) if value is not None else float("nan")
    return None if math.isnan(value) else value
