"""Folder prediction with an exported OpenVINO model: :class:`OpenVinoDetector` and :func:`predict_folder`.

    ssimae-predict results/.../weights/openvino/model.xml path/to/images out/ [--image-fpr 0.01]

writes ``out/predictions.jsonl`` (one :func:`~anomalib_ssimae.records.prediction_record` per image) and
``out/overlays/<name>.png``. Thresholds can be changed at load time from ``calibration.json``
(:func:`~anomalib_ssimae.calibration.normalized_cut`).

Why not anomalib's ``OpenVINOInferencer`` (2.7): its pre-processing guesses the value range (it divides by 255 when
the maximum exceeds 1) and the layout (it transposes when the last axis has 3 entries), it writes an
``openvino_cache/`` folder into the working directory, and it returns the exported labels only. This detector feeds
float32 ``(B, 3, H, W)`` as exported, with an explicit ``INFERENCE_PRECISION_HINT``, and re-cuts labels and masks at
thresholds chosen after export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anomalib_ssimae.calibration import CALIBRATION_FILE, normalized_cut, verify_graph
from anomalib_ssimae.data.images import find_images, read_rgb
from anomalib_ssimae.records import (
    OUT_OF_DISTRIBUTION,
    overlay_picture,
    prediction_record,
    save_image_atomic,
    warn_if_upscaled,
)

logger = logging.getLogger(__name__)


class OpenVinoDetector:
    """An exported OpenVINO model plus its ``calibration.json``, with thresholds changeable at load time.

    Args:
        model_path: ``model.xml`` from ``anomalib export --export_type openvino``.
        precision: OpenVINO ``INFERENCE_PRECISION_HINT``: ``"f32"`` (default; the outputs match torch to ~1e-6) or
            ``"bf16"`` (faster on CPUs with AMX/AVX512-BF16, but SSIM maps moved by 0.05 in a trial: see README).
        image_threshold, pixel_threshold: new raw thresholds (the units of the model's raw anomaly score/map).
        image_fpr, pixel_fpr: or a target false-positive rate from the defect-free calibration.
        device: OpenVINO device name.

    The model is compiled with one stream (``PERFORMANCE_HINT: LATENCY``): with OpenVINO's ``THROUGHPUT`` hint (two
    streams on a 2-core EPYC, OpenVINO 2026.4.1) the outputs of a 256 x 256 SSIM-AE changed by up to 0.09 (scores)
    and 0.67 (maps). OpenVINO computes ``F.fold(x) / F.fold(ones)`` (the tiler's stitching) wrongly with two or more
    streams and a dynamic batch; resizing and input buffers are not the cause
    (``benchmarks/studies/openvino_throughput_repro.py``, ``benchmarks/results/openvino_streams.md``). :meth:`imap` keeps
    requests in flight instead, so that reading and writing files overlaps with inference (1.12x on 2 cores,
    ``benchmarks/results/folder_throughput.md``).

    Raises ``FileNotFoundError`` for a missing model, ``ValueError`` for an impossible threshold request or a
    ``calibration.json`` of another export (:func:`~anomalib_ssimae.calibration.verify_graph`: the SHA-256 of
    ``model.xml`` and ``model.bin`` must be those it was exported with, so a truncated ``model.bin`` is named too).
    """

    def __init__(
        self,
        model_path: str | Path,
        precision: str = "f32",
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
        image_fpr: float | None = None,
        pixel_fpr: float | None = None,
        device: str = "CPU",
    ) -> None:
        import openvino as ov

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
        verify_graph(self.meta, self.model_path)
        self.image_cut, image_info = normalized_cut(self.meta, "image", image_threshold, image_fpr)
        self.pixel_cut, pixel_info = normalized_cut(self.meta, "pixel", pixel_threshold, pixel_fpr)
        self.thresholds = {"image": image_info, "pixel": pixel_info}
        try:
            self.compiled = ov.Core().compile_model(
                str(self.model_path), device, {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
            )
        except RuntimeError as error:
            msg = f"{self.model_path}: OpenVINO cannot load it ({str(error).strip().splitlines()[0][:200]})"
            if not self.meta:  # no fingerprint to name the damaged file
                msg += f"; check that {self.model_path.with_suffix('.bin')} is complete (copy the export again)"
            raise ValueError(msg) from error
        self.image_size = self.meta.get("image_size") or self._map_size()

    def out_of_distribution(self, images: np.ndarray) -> np.ndarray:
        """``(B,)`` booleans: which images ``(B, H, W, 3)`` float32 RGB in [0, 1] the model's frame check rejects
        (recomputed from ``calibration.json``, :func:`~anomalib_ssimae.deploy.frame_check.frame_distances`; all
        ``False`` for an export without a fitted frame check). The exported graph has already scored them 1.0;
        this tells the records why."""
        check = self.meta.get("frame_check")
        if not check:
            return np.zeros(len(images), dtype=bool)
        from anomalib_ssimae.deploy.frame_check import frame_distances

        distances = frame_distances(np.asarray(images).transpose(0, 3, 1, 2), check, self.meta.get("image_size"))
        return distances > check["limit"]

    def _map_size(self) -> list[int] | None:
        """``[h, w]`` of the exported anomaly map (the size the graph resizes to), when static."""
        for port in self.compiled.outputs:
            if "anomaly_map" in port.get_names() and port.get_partial_shape()[-2:].is_static:
                return [int(d.get_length()) for d in port.get_partial_shape()[-2:]]
        return None

    def __call__(self, images: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """``images``: ``(B, 3, H, W)`` float32 in [0, 1]; ``names``: their file names, for the warning about
        images enlarged more than :data:`~anomalib_ssimae.records.MAX_UPSCALE` times to the model's
        ``image_size`` (default: ``input[i]``). Returns ``pred_score (B,)``, ``anomaly_map (B, h, w)``
        (normalised), and ``pred_label (B,)``, ``pred_mask (B, h, w)`` at this detector's thresholds."""
        for index in range(len(images)):
            warn_if_upscaled(names[index] if names else f"input[{index}]", images.shape[-2:], self.image_size)
        # share_inputs=False: OpenVINO would otherwise keep the caller's array as its input buffer, and a later
        # imap() on this detector copied its images into that array (found with benchmarks/studies/openvino_throughput_repro.py)
        return self._result(self.compiled(np.ascontiguousarray(images, dtype=np.float32), share_inputs=False))

    def imap(self, items: Iterable[tuple[Any, np.ndarray | None]], jobs: int = 2) -> Iterator[tuple[Any, dict | None]]:
        """Results of many images with ``jobs`` inference requests in flight, in the order of ``items``.

        ``items``: ``(key, image)`` pairs, ``image`` ``(1, 3, H, W)`` float32 in [0, 1] or ``None`` (passed through
        as ``(key, None)``, e.g. for a file that could not be read). Yields ``(key, result)`` with ``result`` as from
        ``__call__`` (the same values). While a request runs, the caller reads the next file and writes the last
        result.

        Raises:
            ValueError: if ``jobs`` < 1.
        """
        if jobs < 1:
            msg = f"jobs must be at least 1, got {jobs}"
            raise ValueError(msg)
        import openvino as ov

        queue = ov.AsyncInferQueue(self.compiled, jobs)
        finished: dict[int, dict] = {}

        def done(request: Any, index: int) -> None:  # runs in an OpenVINO thread; the buffers are reused: copy
            finished[index] = {port.get_any_name(): np.copy(value) for port, value in request.results.items()}

        queue.set_callback(done)
        # submitted, not yet yielded: (key, input); the input must live until its request is done (OpenVINO may
        # read it in place), and an entry is dropped once yielded (keys may hold whole pictures)
        pending: dict[int, tuple[Any, np.ndarray | None]] = {}
        next_out = 0
        try:
            for index, (key, image) in enumerate(items):
                tensor = None if image is None else np.ascontiguousarray(image, dtype=np.float32)
                pending[index] = (key, tensor)
                if tensor is not None:
                    queue.start_async({0: tensor}, userdata=index)
                while next_out in pending and (pending[next_out][1] is None or next_out in finished):
                    yield self._ordered(pending.pop(next_out), finished.pop(next_out, None))
                    next_out += 1
            queue.wait_all()
            for index in sorted(pending):
                yield self._ordered(pending.pop(index), finished.pop(index, None))
        finally:  # also when the caller stops early (Ctrl-C): no request may outlive its queue
            queue.wait_all()

    def _ordered(self, entry: tuple[Any, np.ndarray | None], outputs: dict | None) -> tuple[Any, dict | None]:
        key, inferred = entry[0], entry[1] is not None
        if inferred and outputs is None:
            msg = f"OpenVINO returned no result for {key[0] if isinstance(key, tuple) else key}"
            raise RuntimeError(msg)
        return key, self._result(outputs) if inferred else None

    def _result(self, outputs: Any) -> dict[str, np.ndarray]:
        """Named outputs -> score, normalised map, and label and mask at this detector's thresholds."""
        named = {key if isinstance(key, str) else key.get_any_name(): value for key, value in outputs.items()}
        score = named["pred_score"].reshape(-1)
        anomaly_map = named["anomaly_map"].reshape(len(score), *named["anomaly_map"].shape[-2:])
        return {
            "pred_score": score,
            "anomaly_map": anomaly_map,
            "pred_label": score > self.image_cut,
            "pred_mask": anomaly_map > self.pixel_cut,
        }


def predict_folder(detector: OpenVinoDetector, input_dir: str | Path, output_dir: str | Path, jobs: int = 2) -> Path:
    """Run ``detector`` on every image under ``input_dir`` (or on one image file); write ``output_dir/predictions.jsonl`` and
    ``output_dir/overlays/<relative path>.png`` (e.g. ``sub/a.jpg.png``). Returns the JSON-lines path.

    Images go through :meth:`OpenVinoDetector.imap` (``jobs`` requests in flight), so reading and writing files
    overlaps with inference; records keep the sorted order.

    Never overwrites: an existing ``predictions.jsonl`` raises ``FileExistsError``. Records are appended to
    ``predictions.jsonl.partial`` as images are done and the file is renamed at the end, so an interrupted run
    leaves its finished records. An unreadable image gets a record with ``"error"`` and the run goes on; an image
    enlarged more than :data:`~anomalib_ssimae.records.MAX_UPSCALE` times gets a warning naming it.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    final = output_dir / "predictions.jsonl"
    partial = final.with_name(final.name + ".partial")
    for existing in (final, partial, output_dir / "overlays"):
        if existing.exists():
            msg = f"{existing} exists: choose another output folder (results are never overwritten)"
            raise FileExistsError(msg)
    if input_dir.is_file():  # one image: its record and overlay as for a folder that holds only it
        images, input_dir = [input_dir], input_dir.parent
    else:
        images = find_images(input_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None

    def read(path: Path) -> tuple[tuple[Path, Any], np.ndarray | None]:
        try:
            array, rgb = read_rgb(path)
        except ValueError as error:
            return (path, error), None
        warn_if_upscaled(str(path), array.shape[:2], detector.image_size)
        return (path, (array.shape[:2], rgb)), array.transpose(2, 0, 1)[None]

    with (
        contextlib.closing(detector.imap((read(path) for path in images), jobs)) as results,
        partial.open("x") as records,
    ):
        for (path, loaded), result in (
            tqdm(results, total=len(images), desc="predict", unit="image") if tqdm else results
        ):
            if result is None:
                logger.error("%s", loaded)
                records.write(json.dumps({"image": str(path), "error": str(loaded)}) + "\n")
                continue
            size, rgb = loaded
            relative = path.relative_to(input_dir)
            overlay = output_dir / "overlays" / relative.with_name(relative.name + ".png")  # a.png, a.jpg differ
            overlay.parent.mkdir(parents=True, exist_ok=True)
            save_image_atomic(overlay_picture(rgb, result["anomaly_map"][0], result["pred_mask"][0]), overlay)
            record = prediction_record(
                path, size, result["pred_score"][0], result["pred_label"][0], result["pred_mask"][0],
                detector.thresholds, overlay,
            )  # fmt: skip
            if result["pred_label"][0] and detector.out_of_distribution(np.asarray(rgb, np.float32)[None] / 255)[0]:
                record["reason"] = OUT_OF_DISTRIBUTION
            records.write(json.dumps(record) + "\n")
            records.flush()
            os.fsync(records.fileno())
    partial.replace(final)
    return final
