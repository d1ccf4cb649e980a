"""Prediction records: defect regions, the JSON-lines record, overlay pictures, JSON numbers, atomic writes, the
names of a prediction run's outputs and the upscaling warning.

Shared by ``anomalib predict`` (:class:`~anomalib_ssimae.callbacks.PredictionRecords`,
:class:`~anomalib_ssimae.visualization.ReconstructionVisualizer`) and ``ssimae-predict``
(:mod:`anomalib_ssimae.deploy.inference`), so both write the same record. NumPy and Pillow only (no torch, anomalib
or SciPy), so that ``ssimae-predict`` runs where only OpenVINO, NumPy and Pillow are installed: the overlay repeats
anomalib 2.7's ``visualize_anomaly_map``/``visualize_mask``/``overlay_images`` and the regions SciPy's
``ndimage.label``, pixel for pixel.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

if TYPE_CHECKING:
    import torch

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
    regions = [{"area": area, "bbox": bbox} for area, bbox in connected_regions(mask)]
    return sorted(regions, key=lambda region: -region["area"])


def connected_regions(mask: np.ndarray) -> list[tuple[int, list[int]]]:
    """The 8-connected regions of a 2-D bool ``mask`` ``(h, w)``, in the order of their first pixel (row by row),
    as ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))`` numbers them: ``(area, [x_min, y_min, x_max,
    y_max])`` each, in pixels (bounds inclusive). NumPy only: runs of each row, joined to the runs of the row above
    that touch them (diagonals too), are merged into regions.

    Example:
        >>> connected_regions(np.array([[1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=bool))
        [(3, [0, 0, 1, 1]), (2, [3, 0, 3, 1]), (2, [0, 3, 1, 3])]
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    steps = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)  # +1: a run starts, -1: one ends
    rows, starts = np.nonzero(steps == 1)  # runs in raster order: row, first column, column after the last
    ends = np.nonzero(steps == -1)[1]
    if len(rows) == 0:
        return []
    # runs of row r - 1 that touch run (r, s, e): their end >= s and their start <= e; contiguous in raster order
    stride = width + 2
    first = np.searchsorted(rows * stride + ends, (rows - 1) * stride + starts, side="left")
    after = np.searchsorted(rows * stride + starts, (rows - 1) * stride + ends, side="right")
    counts = np.maximum(after - first, 0)
    below = np.repeat(np.arange(len(rows)), counts)
    above = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    parent = np.arange(len(rows))  # each run points to a run of its region with a lower index; roots: themselves
    while True:
        roots_below, roots_above = parent[below], parent[above]
        apart = roots_below != roots_above
        if not apart.any():
            break
        low = np.minimum(roots_below[apart], roots_above[apart])
        high = np.maximum(roots_below[apart], roots_above[apart])
        np.minimum.at(parent, high, low)  # hook the higher root under the lower one (parents only ever decrease)
        while not np.array_equal(parent[parent], parent):  # point every run at its root
            parent = parent[parent]
    roots, region = np.unique(parent, return_inverse=True)  # roots ascending: the first run of each region first
    count = len(roots)
    area = np.bincount(region, weights=ends - starts, minlength=count).astype(np.int64)
    x_min, y_min = np.full(count, width), np.full(count, height)
    x_max, y_max = np.full(count, -1), np.full(count, -1)
    np.minimum.at(x_min, region, starts)
    np.minimum.at(y_min, region, rows)
    np.maximum.at(x_max, region, ends - 1)
    np.maximum.at(y_max, region, rows)
    return [(int(area[i]), [int(x_min[i]), int(y_min[i]), int(x_max[i]), int(y_max[i])]) for i in range(count)]


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
    heat = _jet(np.asarray(anomaly_map, dtype=np.float32)).resize(size)
    contour = _contour(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(size, Image.NEAREST))
    for layer, alpha in ((heat, 0.4), (contour, 1.0)):
        image = _overlay(image, layer, alpha)
    return image


# anomalib 2.7's 'jet' colours (anomalib.visualization.image.functional.apply_colormap), interpolated to 256 below
_JET_COLOURS = ((0, 0, 143), (0, 0, 255), (0, 127, 255), (0, 255, 255), (127, 255, 127), (255, 255, 0), (255, 127, 0),
                (255, 0, 0), (127, 0, 0))  # fmt: skip


def _jet_palette() -> list[int]:
    """anomalib's 256-entry palette, 768 ints: its 9 colours interpolated as torch's ``F.interpolate(size=(256, 3),
    mode="bilinear", align_corners=False)`` does in float32, then truncated to uint8 as ``.byte()`` does."""
    colours = np.asarray(_JET_COLOURS, dtype=np.float32)
    scale = np.float32(len(colours) / 256)
    source = np.maximum((np.arange(256, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    low = source.astype(np.int64)
    high = np.minimum(low + 1, len(colours) - 1)
    weight = (source - low).astype(np.float32)[:, None]
    return ((np.float32(1) - weight) * colours[low] + weight * colours[high]).astype(np.uint8).ravel().tolist()


def _jet(anomaly_map: np.ndarray) -> Image.Image:
    """RGB picture of an ``(h, w)`` map in [0, 1] in jet colours, as anomalib's ``visualize_anomaly_map(map,
    colormap=True)``: ``uint8(map * 255)`` (values above 1: ``uint8(map)``) through :func:`_jet_palette`."""
    values = anomaly_map.reshape(anomaly_map.shape[-2:])
    gray = (values * 255).astype(np.uint8) if values.max() <= 1.0 else values.astype(np.uint8)
    picture = Image.fromarray(gray).convert("P")  # uint8 (h, w): mode L
    picture.putpalette(_jet_palette())
    return picture.convert("RGB")


def _contour(mask: Image.Image, color: tuple[int, int, int] = (255, 0, 0)) -> Image.Image:
    """RGBA: the edges of an ``L`` mask (PIL ``FIND_EDGES``) in ``color``, transparent elsewhere, as anomalib's
    ``visualize_mask(mask, mode="contour", color=color)``."""
    edges = Image.new("RGBA", mask.size, (*color, 255))
    edges.putalpha(mask.convert("L").filter(ImageFilter.FIND_EDGES))
    return Image.alpha_composite(Image.new("RGBA", mask.size, (0, 0, 0, 0)), edges)


def _overlay(base: Image.Image, layer: Image.Image, alpha: float) -> Image.Image:
    """RGBA: ``layer`` over ``base`` with its alpha scaled by ``alpha``, as anomalib's ``overlay_image``."""
    base, layer = base.convert("RGBA"), layer.convert("RGBA")
    if base.size != layer.size:
        layer = layer.resize(base.size)
    layer.putalpha(ImageEnhance.Brightness(layer.getchannel("A")).enhance(alpha))
    return Image.alpha_composite(base, layer)


def json_number(value: torch.Tensor | float | None) -> float | None:
    """A scalar tensor or float as a JSON number; ``None`` for a missing or NaN value."""
    value = float(value) if value is not None else float("nan")
    return None if math.isnan(value) else value
