"""Export: ONNX opset, ``calibration.json`` beside every exported model, the fp16 warning, and threshold changes.

An exported model (``anomalib export``) takes ``input (B, 3, H, W)`` float32 RGB in [0, 1] of any H, W, resizes it
to the model's ``image_size`` inside the graph and returns ``pred_score (B,)`` and ``anomaly_map (B, 1, h, w)``
normalised to [0, 1] (the threshold maps to 0.5), ``pred_label (B,)`` and ``pred_mask (B, 1, h, w)`` booleans, with
``(h, w) = image_size``. Beside the model file, ``calibration.json`` holds the raw thresholds, the normalisation
range and, with :class:`~anomalib_ssimae.post_processing.DefectFreePostProcessor`, the defect-free quantiles, so
that :func:`normalized_cut` can set another threshold or false-positive rate without retraining or re-export.

What reads ``calibration.json`` needs no torch and lives in :mod:`anomalib_ssimae.deploy.calibration`
(:data:`CALIBRATION_FILE`, :func:`normalized_cut`, :func:`verify_graph`, :func:`graph_fingerprint`); it is
re-exported here.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from anomalib.deploy import CompressionType

from anomalib_ssimae.deploy.calibration import (  # torch-free, for ssimae-predict; importable from here too
    CALIBRATION_FILE,
    file_sha256,
    graph_files,
    graph_fingerprint,
    normalized_cut,
    verify_graph,
)
from anomalib_ssimae.deploy.records import json_number, write_text_atomic
from anomalib_ssimae.fpr import FPR_GRID

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_FILE",
    "ONNX_OPSET",
    "CalibratedExportMixin",
    "check_image_size",
    "check_opset",
    "export_metadata",
    "file_sha256",
    "graph_files",
    "graph_fingerprint",
    "graph_image_size",
    "ignored_cli_model_arguments",
    "normalized_cut",
    "refuse_existing_export",
    "verify_graph",
    "write_export_metadata",
]

ONNX_OPSET = 18  # the stitching uses Col2Im, opset >= 18; torch's exporter cannot convert the graph down


def check_opset(opset_version: Any) -> None:
    """Refuse an ONNX ``opset_version`` below :data:`ONNX_OPSET`: torch's exporter writes opset 18, its down-conversion
    fails (``No Adapter To Version $17 for Pad``) and it then keeps opset 18 while reporting success.

    Raises:
        ValueError: naming ``opset_version``.
    """
    if opset_version is None:
        return
    if isinstance(opset_version, bool) or not isinstance(opset_version, int) or opset_version < ONNX_OPSET:
        msg = (
            f"onnx_kwargs opset_version={opset_version!r} is not supported: SSIM-AE graphs need ONNX opset "
            f"{ONNX_OPSET} or later (Col2Im stitches the patches; torch's exporter cannot convert them to an older "
            f"opset and would silently keep {ONNX_OPSET}). Use opset_version {ONNX_OPSET} or omit it."
        )
        raise ValueError(msg)


def graph_image_size(model: torch.nn.Module) -> list[int] | None:
    """``[height, width]`` the exported graph resizes its input to: the size the model's export transform gives a
    dummy image (anomalib exports ``pre_processor.export_transform``); ``None`` when the graph does not resize."""
    pre = getattr(model, "pre_processor", None)
    transform = getattr(pre, "export_transform", None) or getattr(pre, "transform", None)
    if transform is None:
        return None
    size = transform(torch.zeros(1, 3, 1, 1)).shape[-2:]
    return None if tuple(size) == (1, 1) else [int(size[0]), int(size[1])]


def check_image_size(model: torch.nn.Module) -> None:
    """Warn when the model's ``image_size`` argument is not what its graph resizes to: ``load_from_checkpoint(ckpt,
    image_size=...)`` builds the model at the requested size, but anomalib then restores the checkpoint's
    pre-processor (the size it was trained and calibrated at), so the request has no effect on the graph."""
    requested, actual = getattr(model, "_image_size", None), graph_image_size(model)
    if requested is not None and actual is not None and list(requested) != actual:
        warnings.warn(
            f"image_size {list(requested)} does not take effect: the checkpoint's pre-processor resizes to {actual}, "
            f"the size the model was trained and its thresholds fitted at. The export (and {CALIBRATION_FILE}) "
            "works at that size; to work at another one, train at it.",
            stacklevel=4,
        )


def ignored_cli_model_arguments(hparams: dict[str, Any], argv: list[str] | None = None) -> list[str]:
    """``--model.init_args.NAME VALUE`` (or ``--model.NAME``) options of an ``anomalib export --ckpt_path`` command
    line whose value differs from the checkpoint's: anomalib rebuilds the model from the checkpoint
    (``Engine.export`` calls ``load_from_checkpoint(ckpt_path)``) and drops them. Returns ``"NAME=VALUE (checkpoint:
    X)"`` strings; empty outside ``anomalib export``."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or Path(argv[0]).name != "anomalib" or "export" not in argv[1:3]:
        return []
    ignored = []
    for index, token in enumerate(argv):
        if not token.startswith("--model."):
            continue
        option, equals, value = token.partition("=")
        if not equals:
            if index + 1 == len(argv):
                continue
            value = argv[index + 1]
        name = option.removeprefix("--model.").removeprefix("init_args.")
        if name in ("class_path", "help") or "." in name:
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        stored = hparams.get(name)
        if name == "image_size":
            parsed, stored = _as_size(parsed), _as_size(stored)
        if parsed != stored:
            ignored.append(f"{name}={value} (checkpoint: {stored})")
    return ignored


def _as_size(value: Any) -> Any:
    """``256`` or ``[256, 256]`` -> ``[256, 256]``; anything else unchanged."""
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, list | tuple):
        return list(value)
    return value


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
        from anomalib_ssimae.models.ssim_ae.frame_check import BINS, SAMPLES  # deferred: the model imports this module

        meta["frame_check"] = {
            "limit": float(check.limit),
            "bins": BINS,
            "samples": SAMPLES,
            "channels": int(check.memory.shape[1]),
            "standardize": getattr(model.model, "intensity_normalization", "none") == "standardize",
            "memory": [
                [[round(float(v), 6) for v in channel] for channel in h] for h in torch.unique(check.memory, dim=0)
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


def int8_needs_data(compression_type: CompressionType) -> str:
    """The error for INT8_PTQ/INT8_ACQ without a datamodule, with the command that works."""
    return (
        f"--compression_type {compression_type.name} calibrates on images: give the configs that trained the model "
        "instead of --model, e.g. anomalib export --config configs/model/ssim_ae.yaml --config "
        f"configs/data/quickstart.yaml --ckpt_path CKPT --export_type openvino --compression_type {compression_type.name}"
        " (its validation and test images are used)"
    )


EXPORT_FILES = {"openvino": (".xml", ".bin"), "onnx": (".onnx", ".onnx.data"), "torch": (".pt",)}


def refuse_existing_export(export_root: Path | str, kind: str, model_file_name: str = "model") -> None:
    """Refuse to export over an earlier export: anomalib writes ``<export_root>/weights/<kind>/<model_file_name>.*``
    and would replace an earlier export's files (and its ``calibration.json``) without a word, e.g. two checkpoints
    exported with the same ``--default_root_dir``.

    Raises:
        FileExistsError: naming the file that exists.
    """
    folder = Path(export_root) / "weights" / kind
    for path in [folder / (model_file_name + suffix) for suffix in EXPORT_FILES[kind]] + [folder / CALIBRATION_FILE]:
        if path.exists():
            msg = (
                f"{path} exists: this export would overwrite an earlier one. Export into another folder "
                "(--default_root_dir, or export_root), or move the earlier export away first"
            )
            raise FileExistsError(msg)


class CalibratedExportMixin:
    """anomalib's ``to_onnx``/``to_openvino``/``to_torch`` plus ``calibration.json`` beside the model file.

    Mixed into :class:`~anomalib_ssimae.SsimAe` before ``AnomalibModule``. ONNX defaults to opset 18 and refuses
    older ones (:func:`check_opset`); fp16 OpenVINO compression warns, because it also rounds the baked thresholds
    and normalisation constants (a score moved 0.59 -> 0.67 in a trial). Every export warns when the model's
    ``image_size`` is not what the graph does (:func:`check_image_size`) and when ``anomalib export`` drops
    ``--model.init_args`` options that differ from the checkpoint (:func:`ignored_cli_model_arguments`).
    An export never replaces an earlier one (:func:`refuse_existing_export`). ``calibration.json`` records the
    SHA-256 of the graph's files (:func:`graph_fingerprint`), which
    :func:`verify_graph` checks before a model is run with it.
    """

    def _check_export(self, export_root: Path | str, kind: str, model_file_name: str) -> None:
        refuse_existing_export(export_root, kind, model_file_name)
        check_image_size(self)
        ignored = ignored_cli_model_arguments(dict(getattr(self, "hparams", {})))
        if ignored:
            warnings.warn(
                "anomalib export --ckpt_path rebuilds the model from the checkpoint and ignores "
                f"{', '.join(ignored)}; the export uses the checkpoint's values (to change them, train again)",
                stacklevel=3,
            )

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """anomalib's ONNX export (opset 18 unless given; older ones raise ``ValueError``) plus ``calibration.json``."""
        kwargs.setdefault("opset_version", ONNX_OPSET)
        check_opset(kwargs["opset_version"])
        if not getattr(self, "_exporting", False):  # to_openvino checked already
            self._check_export(export_root, "onnx", model_file_name)
        path = super().to_onnx(export_root, model_file_name, input_size, **kwargs)
        if not getattr(self, "_exporting", False):  # inside to_openvino the ONNX file is a temporary
            logger.info("export metadata: %s", write_export_metadata(self, path))
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
        check_opset((kwargs.get("onnx_kwargs") or {}).get("opset_version"))
        self._check_export(export_root, "openvino", model_file_name)
        datamodule = kwargs.get("datamodule", args[0] if args else None)
        if compression_type in (CompressionType.INT8_PTQ, CompressionType.INT8_ACQ) and datamodule is None:
            raise ValueError(int8_needs_data(compression_type))  # before the ONNX conversion, nothing written
        if compression_type == CompressionType.FP16:
            warnings.warn(
                "fp16 compression stores the thresholds and normalisation range in fp16 too, which changes scores "
                "and masks (see README, Deployment); run the f32 model with INFERENCE_PRECISION_HINT f32 instead.",
                stacklevel=2,
            )
        self._exporting = True
        self._quantization = None
        created = [
            d for d in (Path(export_root) / "weights" / "openvino", Path(export_root) / "weights") if not d.exists()
        ]
        try:
            path = super().to_openvino(export_root, model_file_name, input_size, compression_type, *args, **kwargs)
        except BaseException:
            for folder in created:  # a refused or failed export leaves no empty folder behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise
        finally:
            self._exporting = False
        logger.info("export metadata: %s", write_export_metadata(self, path))
        return path

    def _compress_ov_model(
        self,
        model: Any,
        compression_type: CompressionType | None = None,
        datamodule: Any = None,
        metric: Any = None,
        task: Any = None,
        max_drop: float = 0.01,
    ) -> Any:
        """anomalib's NNCF compression, except INT8_PTQ and INT8_ACQ, which quantise the network alone and are
        verified against the f32 graph (:func:`~anomalib_ssimae.models.ssim_ae.quantization.quantize_network`):
        anomalib's whole-graph quantisation also quantised the tiling, SSIM and normalisation arithmetic and gave a
        model that scored every image alike.

        Raises:
            ValueError: INT8_PTQ/INT8_ACQ without a datamodule (``--data``), or ``max_drop`` outside [0, 1].
            QuantizationRefused: the INT8 graph changes the f32 labels; nothing is written.
        """
        if compression_type not in (CompressionType.INT8_PTQ, CompressionType.INT8_ACQ):
            return super()._compress_ov_model(model, compression_type, datamodule, metric, task, max_drop)
        from anomalib_ssimae.models.ssim_ae.quantization import loader_images, quantize_network

        name = compression_type.name
        if datamodule is None:
            raise ValueError(int8_needs_data(compression_type))
        if not 0 <= max_drop <= 1:
            msg = f"max_drop must be a fraction of labels in [0, 1], got {max_drop}"
            raise ValueError(msg)
        if metric is not None and compression_type == CompressionType.INT8_ACQ:  # anomalib passes F1 by default
            logger.info(
                "%s validates on the fraction of image and pixel labels equal to the f32 export's (at least "
                "1 - max_drop), not on %s",
                name,
                type(metric).__name__,
            )
        datamodule.setup("fit")
        calibration = loader_images(datamodule.val_dataloader())
        verification = calibration + loader_images(datamodule.test_dataloader())
        quantized, agreement = quantize_network(
            model, calibration, verification, compression_type == CompressionType.INT8_ACQ, max_drop
        )
        self._quantization = {"compression_type": name} | agreement
        logger.info(
            "%s: image labels equal to f32 on %d of %d images, pixel labels on %.2f%%",
            name,
            agreement["image_labels_equal"],
            agreement["images"],
            100 * agreement["pixel_agreement"],
        )
        return quantized

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """anomalib's pickled torch export plus ``calibration.json``."""
        self._check_export(export_root, "torch", model_file_name)
        path = super().to_torch(export_root, model_file_name)
        logger.info("export metadata: %s", write_export_metadata(self, path))
        return path
