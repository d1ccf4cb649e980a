"""Prediction records: defect regions, the JSON-lines record, overlay pictures, JSON numbers, atomic writes, the
names of a prediction run's outputs and the upscaling warning.

Shared by ``anomalib predict`` (:class:`~anomalib_ssimae.callbacks.PredictionRecords`,
:class:`~anomalib_ssimae.visualization.ReconstructionVisualizer`) and ``ssimae-predict``
(:mod:`anomalib_ssimae.deploy.inference`), so both write the same record.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.visualization.image.functional import overlay_images, visualize_anomaly_map, visualize_mask
from PIL import Image
from scipy import ndimage

logger = logging.getLogger(__name__)

MAX_UPSCALE = 2.0  # an image enlarged more than this (per side) to the model's image_size gets a warning
# a record's "reason" when the model's frame check rejected the image (models/ssim_ae/frame_check.py)
OUT_OF_DISTRIBUTION = (
    "out of distribution: its intensity histogram is unlike every defect-free training image (a blank, saturated, "
    "inverted or badly exposed frame, or another part): labelled anomalous whatever its anomaly map shows"
)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    umask = os.umask(0)
    os.umask(umask)
    Path(tmp.name).chmod(0o666 & ~umask)  # readable like any other file, not the temp file's 0600
    Path(tmp.name).replace(path)


def save_image_atomic(image: Image.Image, path: Path) -> None:
    """Save ``image`` to ``path`` (format from the suffix) through a temporary file in the same folder and a rename:
    an interrupted run never leaves a half-written picture under the real name."""
    temporary = path.with_name(f".{path.name}.partial")
    image.save(temporary, format=Image.registered_extensions()[path.suffix.lower()])
    temporary.replace(path)


def picture_name(name: str) -> str:
    """The result picture's file name for an input file name: the same name when PIL can write its format (as
    anomalib's visualizer does), else with ``.png`` appended."""
    suffix = Path(name).suffix.lower()
    writable = suffix in Image.registered_extensions() and Image.registered_extensions()[suffix] in Image.SAVE
    return name if writable else f"{name}.png"


def reserve_prediction_run(root: Path, pictures: Path | None = None) -> str:
    """A new run name ``predictions-<YYYYmmdd-HHMMSS>[-N]``: no ``<root>/<name>.jsonl`` (or ``.partial``) exists
    and, with ``pictures``, the folder ``<pictures>/<name>`` did not exist and has now been created (so two runs
    started in the same second never share it)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    number = 1
    while True:
        name = f"predictions-{stamp}" if number == 1 else f"predictions-{stamp}-{number}"
        number += 1
        if (root / f"{name}.jsonl").exists() or (root / f"{name}.jsonl.partial").exists():
            continue
        if pictures is None:
            return name
        pictures.mkdir(parents=True, exist_ok=True)
        try:
            (pictures / name).mkdir()
        except FileExistsError:
            continue
        return name


def reserve_run_folder(parent: Path, prefix: str) -> Path:
    """Create and return a new folder ``<parent>/<prefix>-<YYYYmmdd-HHMMSS>[-N]`` (``parent`` is created if
    missing). The folder is made without ``exist_ok``, so two runs started in the same second never share one and
    nothing of an earlier run is ever written over."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = parent / (f"{prefix}-{stamp}" if number == 1 else f"{prefix}-{stamp}-{number}")
        number += 1
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder


def remove_if_empty(folder: Path | None) -> bool:
    """Remove ``folder`` if it holds no file at all (only empty sub-folders, or nothing); return whether it did.
    What a failed run reserved but never wrote to goes, so it cannot be mistaken for a result."""
    if folder is None or not folder.is_dir() or folder.is_symlink():
        return False
    if any(not path.is_dir() or path.is_symlink() for path in folder.rglob("*")):
        return False
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.rmdir()
    folder.rmdir()
    return True


def common_folder(paths: Iterable[str | Path]) -> Path | None:
    """The deepest folder holding all ``paths`` (absolute), or ``None`` for no paths. Result pictures keep each
    input's path below it, so ``line1/good/000.png`` and ``line2/good/000.png`` get two pictures."""
    folders = {str(Path(p).absolute().parent) for p in paths}
    return Path(os.path.commonpath(sorted(folders))) if folders else None


def upscale_factor(size: tuple[int, int], image_size: tuple[int, int] | list[int] | None) -> float:
    """How much an image of ``size`` (height, width) is enlarged, on its more enlarged side, when resized to
    ``image_size`` (height, width); 1.0 without an ``image_size``."""
    if image_size is None or min(size) < 1:
        return 1.0
    return max(1.0, image_size[0] / size[0], image_size[1] / size[1])


def warn_if_upscaled(
    path: str | Path, size: tuple[int, int], image_size: tuple[int, int] | list[int] | None, count: int = 1
) -> float | None:
    """Log a warning naming ``path`` and the factor when resizing it to ``image_size`` enlarges a side more than
    :data:`MAX_UPSCALE` times (the network then sees blurred pixels it never saw in training and flags them or
    misses small defects); with ``count`` > 1, ``path`` is the example of ``count`` such images of a dataset.
    Returns the factor when it warned, else ``None``."""
    factor = upscale_factor(size, image_size)
    if factor <= MAX_UPSCALE:
        return None
    many = f"{count} images are enlarged more than {MAX_UPSCALE:g} times, e.g. " if count > 1 else ""
    logger.warning(
        "%s%s: %d x %d (width x height) is enlarged %.3g times to the model's image_size %d x %d; more than %g times "
        "gives unreliable scores: use images of the training resolution (crop or tile large ones, do not enlarge "
        "small ones)",
        many,
        path,
        size[1],
        size[0],
        factor,
        image_size[1],
        image_size[0],
        MAX_UPSCALE,
    )
    return factor


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
