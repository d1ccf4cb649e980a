"""``calibration.json`` of an exported model, with the standard library and NumPy alone (no torch): its file name,
the fingerprint of the graph it belongs to (:func:`graph_fingerprint`, :func:`verify_graph`) and threshold changes at
load time (:func:`normalized_cut`).

Shared by the export (:mod:`anomalib_ssimae.models.ssim_ae.export_metadata`, which writes the file) and by
prediction with an exported OpenVINO model (:mod:`anomalib_ssimae.deploy.inference`, ``ssimae-predict``), which must
run on a machine with OpenVINO, NumPy and Pillow only.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

from anomalib_ssimae.fpr import MIN_FPR, interpolate_fpr

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"


def graph_files(model_path: str | Path) -> dict[str, Path]:
    """The files of an exported graph by role: ``graph`` (``model.xml``, ``model.onnx`` or ``model.pt``) and, where
    there is one, ``weights`` (OpenVINO's ``model.bin``, ONNX's external ``model.onnx.data``)."""
    path = Path(model_path)
    files = {"graph": path}
    weights = path.with_suffix(".bin") if path.suffix == ".xml" else path.with_name(path.name + ".data")
    if path.suffix == ".xml" or (path.suffix == ".onnx" and weights.exists()):
        files["weights"] = weights
    return files


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def graph_fingerprint(model_path: str | Path) -> dict[str, str]:
    """Hex SHA-256 of each of :func:`graph_files`, by role (``{"graph": ..., "weights": ...}``): what
    ``calibration.json`` records of the export it belongs to. Raises ``OSError`` if a file cannot be read."""
    return {role: file_sha256(path) for role, path in graph_files(model_path).items()}


def verify_graph(meta: dict[str, Any], model_path: str | Path) -> None:
    """Check that ``calibration.json`` (``meta``) was written for the exported graph at ``model_path``: its
    thresholds and normalisation range are those baked into that graph only. A ``calibration.json`` of 0.3.0 and
    earlier has no fingerprint and is accepted with a warning.

    Raises:
        ValueError: a file of the graph is missing or differs from the one exported with this ``calibration.json``
            (another export's, changed or truncated), naming the file.
    """
    expected = meta.get("graph_sha256")
    model_path = Path(model_path)
    if not meta:
        return
    if not expected:
        logger.warning(
            "%s has no fingerprint of its graph (exported before anomalib-ssimae 0.4): cannot check that it belongs "
            "to %s; export again to have it checked",
            model_path.parent / CALIBRATION_FILE,
            model_path,
        )
        return
    for role, path in graph_files(model_path).items():
        if role not in expected:
            continue
        if not path.is_file():
            msg = f"{path}: missing; {model_path.parent / CALIBRATION_FILE} belongs to an export that had it"
            raise ValueError(msg)
        if file_sha256(path) != expected[role]:
            msg = (
                f"{path} is not the file {model_path.parent / CALIBRATION_FILE} was exported with (another export's, "
                "changed or truncated): its thresholds and normalisation would not match the graph. Keep the "
                "model files and calibration.json of one export together, or export again"
            )
            raise ValueError(msg)


def normalized_cut(
    meta: dict[str, Any],
    level: str,
    threshold: float | None = None,
    fpr: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """Cut on the exported (normalised) ``level`` = "image" or "pixel" output for a new raw ``threshold`` or a
    false-positive rate ``fpr`` (needs defect-free calibration); neither keeps the exported cut.

    Returns ``(cut, description)``; outputs strictly above ``cut`` are anomalous. Raises ``ValueError`` when both or
    an impossible request is given: a value that is not finite (NaN, inf), no ``calibration.json``, no calibration
    for ``fpr``, a zero normalisation range, or a threshold outside the normalisation range (where the exported
    outputs are clamped).
    """
    if threshold is not None and fpr is not None:
        msg = f"give a {level} threshold or a {level} false-positive rate, not both"
        raise ValueError(msg)
    for name, value in ((f"{level} threshold", threshold), (f"{level} false-positive rate", fpr)):
        if value is not None and not math.isfinite(value):  # NaN would fail every range check with wrong advice
            msg = f"the {name} must be a finite number, got {value}"
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
    note = None
    if fpr is not None:
        if not MIN_FPR <= fpr <= 1:
            msg = (
                f"{level} false-positive rate {fpr:g} ({level}_fpr, ssimae-predict --{level}-fpr) is outside "
                f"[{MIN_FPR:g}, 1]: the export's defect-free quantiles go down to {MIN_FPR:g} only"
            )
            raise ValueError(msg)
        images = (meta.get("calibration") or {}).get("defect_free_images")
        if level == "image" and images and fpr * images < 1:
            note = (
                f"image_fpr {fpr:g} is below what {images} defect-free calibration images resolve (1/{images}): "
                "the threshold is near their highest score and the actual rate is unknown"
            )
            logger.warning("%s", note)
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
    info = {"raw": threshold, "normalized": cut, "source": source}
    if note is not None:
        info["note"] = note
    return cut, info
