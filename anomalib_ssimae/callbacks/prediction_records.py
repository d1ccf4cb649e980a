"""JSON-lines records of ``anomalib predict`` (:class:`PredictionRecords`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from anomalib.utils.path import generate_output_filename
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

from anomalib_ssimae.callbacks.input_checks import InputChecks
from anomalib_ssimae.callbacks.run_summary import say
from anomalib_ssimae.records import (
    OUT_OF_DISTRIBUTION,
    json_number,
    prediction_record,
    reserve_prediction_run,
    warn_if_upscaled,
)

logger = logging.getLogger(__name__)


class PredictionRecords(Callback):
    """Write one JSON-lines record per predicted image (``anomalib predict``): normalised anomaly score, label, the
    thresholds used and the defect regions in original-image pixels (:func:`anomalib_ssimae.records.prediction_record`).

    The file is ``<default_root_dir>/predictions-<YYYYmmdd-HHMMSS>[-N].jsonl``, a new file per run named like the
    run's picture folder (:class:`~anomalib_ssimae.visualization.ReconstructionVisualizer`), written as ``.partial``
    while predicting and renamed at the end, so earlier results are never overwritten. ``overlay`` is the picture
    the visualizer wrote for the image. Images that the resize to the model's ``image_size`` enlarges more than
    :data:`~anomalib_ssimae.records.MAX_UPSCALE` times get a warning naming them. A file that cannot be read
    (:class:`~anomalib_ssimae.callbacks.InputChecks` dropped it from the dataset) gets a record with ``"image"`` and
    ``"error"`` only, as in ``ssimae-predict``.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._file = None
        self._warned = False
        self._overlays: dict[str, str] = {}

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open a new records file."""
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        name = getattr(pl_module.visualizer, "predict_run", None) or reserve_prediction_run(root)
        self._path = root / f"{name}.jsonl"
        self._file = self._path.with_name(self._path.name + ".partial").open("x")
        self._overlays = {}
        checks = next((cb for cb in trainer.callbacks if isinstance(cb, InputChecks)), None)
        for path, error in checks.unreadable if checks is not None else []:  # dropped from the dataset: a record each
            self._file.write(json.dumps({"image": str(path), "error": error}) + "\n")

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Append the batch's records (after anomalib's post-processor has set labels and masks)."""
        del batch, batch_idx, dataloader_idx
        if outputs.image_path is None:
            if not self._warned:
                self._warned = True
                logger.warning("PredictionRecords: the predict batches carry no image paths; no records written")
            return
        post = pl_module.post_processor
        thresholds = None
        if post is not None and json_number(getattr(post, "image_threshold", None)) is not None:
            thresholds = {
                level: {
                    "raw": json_number(getattr(post, f"{level}_threshold", None)),
                    "normalized": float(1 - getattr(post, f"{level}_sensitivity", 0.5)),
                    "source": "checkpoint",
                }
                for level in ("image", "pixel")
            }
            for level in ("image", "pixel"):  # DefectFreePostProcessor: the rate the threshold was set for
                if getattr(post, f"{level}_fpr", None) is not None:
                    thresholds[level]["fpr"] = float(getattr(post, f"{level}_fpr"))
        labels = outputs.pred_label if _is_bool(outputs.pred_label) else None  # None: no threshold in the model
        masks = outputs.pred_mask if _is_bool(outputs.pred_mask) else None
        written = getattr(outputs, "visualization_path", None)  # ReconstructionVisualizer's pictures of this batch
        image_size = _model_image_size(pl_module)
        for index, image_path in enumerate(outputs.image_path):
            overlay = (
                written[index]
                if written is not None
                else self._other_visualizer_picture(trainer, pl_module, image_path)
            )
            with Image.open(image_path) as image:
                size = (image.height, image.width)
            warn_if_upscaled(image_path, size, image_size)
            mask = masks[index].detach().cpu().numpy().reshape(masks.shape[-2:]) if masks is not None else None
            label = bool(labels[index]) if labels is not None else None
            record = prediction_record(
                image_path, size, float(outputs.pred_score[index]), label, mask, thresholds, overlay
            )
            rejected = getattr(outputs, "out_of_distribution", None)
            if rejected is not None and bool(rejected[index]):
                record["reason"] = OUT_OF_DISTRIBUTION
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def _other_visualizer_picture(self, trainer: Trainer, pl_module: LightningModule, image_path: str) -> Path | None:
        """The picture another visualizer (anomalib's ``ImageVisualizer``) wrote for ``image_path``, by anomalib's
        rule; warns when two images of the run map to the same picture (the later one replaced it)."""
        visualizer_dir = getattr(pl_module.visualizer, "output_dir", None)
        if visualizer_dir is None:
            return None
        datamodule = getattr(trainer, "datamodule", None)
        overlay = generate_output_filename(
            input_path=image_path,
            output_path=visualizer_dir,
            dataset_name=getattr(datamodule, "name", None),
            category=getattr(datamodule, "category", None),
            mkdir=False,
        )
        earlier = self._overlays.setdefault(str(overlay), str(image_path))
        if earlier != str(image_path):
            logger.warning(
                "%s and %s share the picture %s of %s, which keeps only the last; use the model's default "
                "visualizer (ReconstructionVisualizer) for one picture per image",
                earlier,
                image_path,
                overlay,
                type(pl_module.visualizer).__name__,
            )
        return overlay

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close and publish the records file."""
        del trainer, pl_module
        if self._file is not None:
            self._file.close()
            self._path.with_name(self._path.name + ".partial").replace(self._path)
            say(f"prediction records (JSON lines): {self._path.resolve()}")
            self._file = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A failed run keeps its finished records in the ``.partial`` file, and leaves none when it has none."""
        del trainer, pl_module, exception
        if self._file is not None:
            self._file.close()
            partial = self._path.with_name(self._path.name + ".partial")
            if partial.exists() and partial.stat().st_size == 0:
                partial.unlink()
            self._file = None


def _model_image_size(pl_module: LightningModule) -> tuple[int, int] | None:
    """The size the model's pre-processor resizes images to, ``(height, width)``; ``None`` if it does not."""
    size = getattr(pl_module, "input_size", None)
    return (int(size[0]), int(size[1])) if size is not None else None


def _is_bool(tensor: Any) -> bool:
    """A boolean tensor (anomalib leaves scores unthresholded, as floats, when it has no threshold)."""
    return tensor is not None and getattr(tensor, "dtype", None) == torch.bool
