"""Export of the SSIM-AE models: anomalib's ``to_onnx``/``to_openvino``/``to_torch`` with ONNX opset 18, the fp16
warning, refusals of what would go wrong, INT8 quantisation of the network alone, and ``calibration.json`` beside
every exported model (:mod:`~anomalib_ssimae.models.ssim_ae.export_metadata`, which also says what an exported graph
takes and returns).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from anomalib.deploy import CompressionType

from anomalib_ssimae.calibration import CALIBRATION_FILE
from anomalib_ssimae.models.ssim_ae.export_metadata import graph_image_size, write_export_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "ONNX_OPSET",
    "CalibratedExportMixin",
    "check_image_size",
    "check_opset",
    "ignored_cli_model_arguments",
    "refuse_existing_export",
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


@contextlib.contextmanager
def on_the_cpu(model: torch.nn.Module) -> Iterator[None]:
    """Export from the CPU, then put the model back where it was. A model trained or loaded on a GPU (``anomalib
    export --ckpt_path`` of a GPU checkpoint keeps it there) would otherwise pickle CUDA tensors into ``model.pt``,
    which ``torch.load`` then refuses on a machine without one, and trace its graph on the GPU, in TF32."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    device = next(tensors, torch.empty(0)).device  # a model of buffers only (a fixed map, say) counts too
    if device.type == "cpu":
        yield
        return
    model.cpu()
    try:
        yield
    finally:
        model.to(device)


class CalibratedExportMixin:
    """anomalib's ``to_onnx``/``to_openvino``/``to_torch`` plus ``calibration.json`` beside the model file.

    Mixed into :class:`~anomalib_ssimae.SsimAe` before ``AnomalibModule``. ONNX defaults to opset 18 and refuses
    older ones (:func:`check_opset`); fp16 OpenVINO compression warns, because it also rounds the baked thresholds
    and normalisation constants (a score moved 0.59 -> 0.67 in a trial). Every export warns when the model's
    ``image_size`` is not what the graph does (:func:`check_image_size`) and when ``anomalib export`` drops
    ``--model.init_args`` options that differ from the checkpoint (:func:`ignored_cli_model_arguments`).
    An export never replaces an earlier one (:func:`refuse_existing_export`). ``calibration.json`` records the
    SHA-256 of the graph's files (:func:`~anomalib_ssimae.calibration.graph_fingerprint`), which
    :func:`~anomalib_ssimae.calibration.verify_graph` checks before a model is run with it.
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
        with on_the_cpu(self):
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
            with on_the_cpu(self):
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
        with on_the_cpu(self):  # a CPU model.pt loads on any machine
            path = super().to_torch(export_root, model_file_name)
        logger.info("export metadata: %s", write_export_metadata(self, path))
        return path
