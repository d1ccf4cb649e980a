"""Deployment: export metadata, defect regions, JSON-lines records and folder prediction with an exported model.

An exported model (``anomalib export``) takes ``input (B, 3, H, W)`` float32 RGB in [0, 1] of any H, W, resizes it
to the model's ``image_size`` inside the graph and returns ``pred_score (B,)`` and ``anomaly_map (B, 1, h, w)``
normalised to [0, 1] (the threshold maps to 0.5), ``pred_label (B,)`` and ``pred_mask (B, 1, h, w)`` booleans, with
``(h, w) = image_size``. Beside the model file, ``calibration.json`` holds the raw thresholds, the normalisation
range and, with :class:`~anomalib_ssimae.post_processing.DefectFreePostProcessor`, the defect-free quantiles, so
that :class:`OpenVinoDetector` can use another threshold or false-positive rate without retraining or re-export.

    ssimae-predict results/.../weights/openvino/model.xml path/to/images out/ [--image-fpr 0.01]

writes ``out/predictions.jsonl`` (one :func:`prediction_record` per image) and ``out/overlays/<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.visualization.image.functional import overlay_images, visualize_anomaly_map, visualize_mask
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from anomalib_ssimae.data.validation import UNSUPPORTED_MODES
from anomalib_ssimae.post_processing import FPR_GRID, interpolate_fpr

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
CALIBRATION_FILE = "calibration.json"


# ----------------------------------------------------------------------------------------------- files
def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    umask = os.umask(0)
    os.umask(umask)
    Path(tmp.name).chmod(0o666 & ~umask)  # readable like any other file, not the temp file's 0600
    Path(tmp.name).replace(path)


def read_rgb(path: str | Path) -> tuple[np.ndarray, Image.Image]:
    """Image file -> ``(H, W, 3)`` float32 RGB in [0, 1] and the RGB PIL image, exactly as anomalib's loader reads
    it (``PIL.Image.convert("RGB") / 255``): gray, RGB, RGBA (alpha dropped) and palette files.

    Raises ``ValueError`` naming the file if PIL cannot decode it, or if it has 16-bit or float pixels (anomalib's
    loader would clip those to white, so the model never saw such images; convert them to 8 bits first).
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        msg = f"{path}: cannot be read as an image ({error})"
        raise ValueError(msg) from error
    if mode in UNSUPPORTED_MODES:
        msg = f"{path}: PIL mode {mode} (16-bit or float pixels); convert it to 8 bits first"
        raise ValueError(msg)
    return np.asarray(rgb, dtype=np.float32) / 255.0, rgb


# ----------------------------------------------------------------------------------------------- regions, records
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
    regions = [{"area": int(areas[i]), "bbox": [int(box[1].start), int(box[0].start),
                                                 int(box[1].stop - 1), int(box[0].stop - 1)]}
               for i, box in enumerate(boxes)]
    return sorted(regions, key=lambda region: -region["area"])


def prediction_record(image_path: str | Path, size: tuple[int, int], score: float, label: bool | None,
                      mask: np.ndarray | None, thresholds: dict[str, Any] | None,
                      overlay: str | Path | None = None) -> dict[str, Any]:
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
    contour = visualize_mask(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(size, Image.NEAREST),
                             mode="contour", color=(255, 0, 0))
    return overlay_images(image, [heat, contour], alpha=[0.4, 1.0])


# ----------------------------------------------------------------------------------------------- export metadata
def json_number(value: torch.Tensor | float | None) -> float | None:
    """A scalar tensor or float as a JSON number; ``None`` for a missing or NaN value."""
    value = float(value) if value is not None else float("nan")
    return None if math.isnan(value) else value


def export_metadata(model: torch.nn.Module) -> dict[str, Any]:
    """What the exported graph bakes in, as plain data (see module docstring): model name, ``image_size``, raw
    image/pixel thresholds, the normalised cuts (``1 - sensitivity``), the normalisation range and, if calibrated on
    defect-free images, the quantiles at :data:`~anomalib_ssimae.post_processing.FPR_GRID`.
    """
    post = model.post_processor
    meta: dict[str, Any] = {
        "model": type(model).__name__,
        "image_size": list(model._image_size),  # noqa: SLF001
        "input": "float32 RGB (B, 3, H, W) in [0, 1], any H and W (resized inside to image_size, bilinear, "
                 "no antialiasing)",
        "normalized": bool(getattr(post, "enable_normalization", False)),
    }
    if post is None:
        return meta
    meta.update({
        "image_threshold": json_number(post.image_threshold),
        "pixel_threshold": json_number(post.pixel_threshold),
        "image_cut": float(1 - post.image_sensitivity),
        "pixel_cut": float(1 - post.pixel_sensitivity),
        "image_min": json_number(post.image_min), "image_max": json_number(post.image_max),
        "pixel_min": json_number(post.pixel_min), "pixel_max": json_number(post.pixel_max),
        "post_processor": type(post).__name__,
    })
    if hasattr(post, "image_fpr_quantiles"):
        meta["calibration"] = {
            "image_fpr": post.image_fpr, "pixel_fpr": post.pixel_fpr, "min_defect_area": post.min_defect_area,
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


def normalized_cut(meta: dict[str, Any], level: str, threshold: float | None = None, fpr: float | None = None,
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
        msg = (f"cannot change the {level} threshold: the export has no {CALIBRATION_FILE} with a threshold and a "
               "normalisation range (export again with this package)")
        raise ValueError(msg)
    if fpr is not None:
        table = (meta.get("calibration") or {}).get(f"{level}_fpr_quantiles")
        if not table or any(v is None for v in table):
            msg = (f"{level} false-positive rate requested, but the export has no defect-free calibration: train "
                   "with post_processor anomalib_ssimae.post_processing.DefectFreePostProcessor")
            raise ValueError(msg)
        threshold = interpolate_fpr(table, fpr)
    if not high > low:
        msg = f"the {level} normalisation range of the export is empty ({low} .. {high}): the threshold is fixed"
        raise ValueError(msg)
    cut = (threshold - raw) / (high - low) + exported
    if not 0 <= cut < 1:
        msg = (f"{level} threshold {threshold:.6g} lies outside the range the exported {level} outputs can express "
               f"({raw - exported * (high - low):.6g} .. {raw + (1 - exported) * (high - low):.6g}, where they are "
               "clamped); re-export after DefectFreePostProcessor.set_false_positive_rates")
        raise ValueError(msg)
    source = f"{level}_fpr={fpr:g}" if fpr is not None else "user"
    return cut, {"raw": threshold, "normalized": cut, "source": source}


# ----------------------------------------------------------------------------------------------- OpenVINO
class OpenVinoDetector:
    """An exported OpenVINO model plus its ``calibration.json``, with thresholds changeable at load time.

    Args:
        model_path: ``model.xml`` from ``anomalib export --export_type openvino``.
        precision: OpenVINO ``INFERENCE_PRECISION_HINT``: ``"f32"`` (default; the outputs match torch to ~1e-6) or
            ``"bf16"`` (faster on CPUs with AMX/AVX512-BF16, but SSIM maps moved by 0.05 in a trial: see README).
        image_threshold, pixel_threshold: new raw thresholds (the units of the model's raw anomaly score/map).
        image_fpr, pixel_fpr: or a target false-positive rate from the defect-free calibration.
        device: OpenVINO device name.

    Raises ``FileNotFoundError`` for a missing model, ``ValueError`` for an impossible threshold request.
    """

    def __init__(self, model_path: str | Path, precision: str = "f32", image_threshold: float | None = None,
                 pixel_threshold: float | None = None, image_fpr: float | None = None,
                 pixel_fpr: float | None = None, device: str = "CPU") -> None:
        import openvino as ov  # noqa: PLC0415 (optional at import time of the package)

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            msg = f"{self.model_path}: no such OpenVINO model (expected .../weights/openvino/model.xml)"
            raise FileNotFoundError(msg)
        calibration = self.model_path.parent / CALIBRATION_FILE
        try:
            self.meta = json.loads(calibration.read_text()) if calibration.is_file() else {}
        except json.JSONDecodeError as error:
            msg = f"{calibration}: not valid JSON ({error}); export the model again"
            raise ValueError(msg) from error
        if not self.meta:
            logger.warning("%s not found: the exported thresholds are used and cannot be changed", calibration)
        self.image_cut, image_info = normalized_cut(self.meta, "image", image_threshold, image_fpr)
        self.pixel_cut, pixel_info = normalized_cut(self.meta, "pixel", pixel_threshold, pixel_fpr)
        self.thresholds = {"image": image_info, "pixel": pixel_info}
        try:
            self.compiled = ov.Core().compile_model(str(self.model_path), device,
                                                    {"INFERENCE_PRECISION_HINT": precision})
        except RuntimeError as error:
            msg = f"{self.model_path}: OpenVINO cannot load it ({str(error).strip().splitlines()[0][:200]})"
            raise ValueError(msg) from error

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images``: ``(B, 3, H, W)`` float32 in [0, 1]. Returns ``pred_score (B,)``, ``anomaly_map (B, h, w)``
        (normalised), and ``pred_label (B,)``, ``pred_mask (B, h, w)`` at this detector's thresholds."""
        outputs = self.compiled(np.ascontiguousarray(images, dtype=np.float32))
        named = {port.get_any_name(): value for port, value in outputs.items()}
        score = named["pred_score"].reshape(-1)
        anomaly_map = named["anomaly_map"].reshape(len(score), *named["anomaly_map"].shape[-2:])
        return {"pred_score": score, "anomaly_map": anomaly_map,
                "pred_label": score > self.image_cut, "pred_mask": anomaly_map > self.pixel_cut}


def find_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) under ``folder``, recursively, sorted. Raises if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"{folder}: not a folder"
        raise NotADirectoryError(msg)
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        msg = f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        raise FileNotFoundError(msg)
    return images


def predict_folder(detector: OpenVinoDetector, input_dir: str | Path, output_dir: str | Path) -> Path:
    """Run ``detector`` on every image under ``input_dir``; write ``output_dir/predictions.jsonl`` and
    ``output_dir/overlays/<relative path>.png`` (e.g. ``sub/a.jpg.png``). Returns the JSON-lines path.

    Never overwrites: an existing ``predictions.jsonl`` raises ``FileExistsError``. Records are appended to
    ``predictions.jsonl.partial`` as images are done and the file is renamed at the end, so an interrupted run
    leaves its finished records. An unreadable image gets a record with ``"error"`` and the run goes on.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    final = output_dir / "predictions.jsonl"
    partial = final.with_name(final.name + ".partial")
    for existing in (final, partial, output_dir / "overlays"):
        if existing.exists():
            msg = f"{existing} exists: choose another output folder (results are never overwritten)"
            raise FileExistsError(msg)
    images = find_images(input_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        from tqdm import tqdm  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        tqdm = None  # noqa: N806
    with partial.open("x") as records:
        for path in tqdm(images, desc="predict", unit="image") if tqdm else images:
            relative = path.relative_to(input_dir)
            try:
                array, rgb = read_rgb(path)
            except ValueError as error:
                logger.error("%s", error)
                records.write(json.dumps({"image": str(path), "error": str(error)}) + "\n")
                continue
            result = detector(array.transpose(2, 0, 1)[None])
            overlay = output_dir / "overlays" / relative.with_name(relative.name + ".png")  # a.png, a.jpg differ
            overlay.parent.mkdir(parents=True, exist_ok=True)
            temporary = overlay.with_name(f".{overlay.name}.partial")
            overlay_picture(rgb, result["anomaly_map"][0], result["pred_mask"][0]).save(temporary, format="PNG")
            temporary.replace(overlay)  # an interrupted run leaves no half-written picture under the real name
            record = prediction_record(path, array.shape[:2], result["pred_score"][0], result["pred_label"][0],
                                       result["pred_mask"][0], detector.thresholds, overlay)
            records.write(json.dumps(record) + "\n")
            records.flush()
            os.fsync(records.fileno())
    partial.replace(final)
    return final


def main(argv: list[str] | None = None) -> None:
    """``ssimae-predict``: folder prediction with an exported OpenVINO model (see module docstring)."""
    parser = argparse.ArgumentParser(prog="ssimae-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model.xml from anomalib export --export_type openvino")
    parser.add_argument("input_dir", help="folder of images (searched recursively)")
    parser.add_argument("output_dir", help="new folder for predictions.jsonl and overlays/")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"])
    image = parser.add_mutually_exclusive_group()
    image.add_argument("--image-threshold", type=float, help="raw image threshold (replaces the exported one)")
    image.add_argument("--image-fpr", type=float, help="image false-positive rate on the defect-free images")
    pixel = parser.add_mutually_exclusive_group()
    pixel.add_argument("--pixel-threshold", type=float, help="raw pixel threshold")
    pixel.add_argument("--pixel-fpr", type=float, help="pixel false-positive rate on the defect-free images "
                       "(min_defect_area is not re-applied)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        detector = OpenVinoDetector(args.model, args.precision, args.image_threshold, args.pixel_threshold,
                                    args.image_fpr, args.pixel_fpr)
        path = predict_folder(detector, args.input_dir, args.output_dir)
    except (OSError, ValueError) as error:  # a clear one-line message, no traceback
        parser.exit(2, f"ssimae-predict: error: {error}\n")
    except KeyboardInterrupt:
        partial = Path(args.output_dir) / "predictions.jsonl.partial"
        parser.exit(130, f"ssimae-predict: interrupted; the finished records are in {partial}\n")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    flagged = sum(1 for r in lines if r.get("label") == "anomalous")
    failed = sum(1 for r in lines if "error" in r)
    print(f"{len(lines) - failed} images predicted, {flagged} anomalous, {failed} unreadable. Records: {path}  "  # noqa: T201
          f"Overlays: {path.parent / 'overlays'}")
    if failed == len(lines):
        parser.exit(1, "ssimae-predict: error: no image could be read (see the records)\n")


if __name__ == "__main__":
    main()
