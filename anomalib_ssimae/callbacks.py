"""Callbacks the model adds to every run: where things are (:class:`RunSummary`), JSON-lines records of
``anomalib predict`` (:class:`PredictionRecords`), and validation checks and TensorBoard pictures
(:class:`ValidationMonitor`)."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from anomalib.post_processing import PostProcessor
from anomalib.utils.path import generate_output_filename
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image

from anomalib_ssimae.deploy.records import json_number, prediction_record
from anomalib_ssimae.models.ssim_ae.torch_model import to_model_channels
from anomalib_ssimae.post_processing import DefectFreePostProcessor

logger = logging.getLogger(__name__)


def say(message: str) -> None:
    """Tell the user something: INFO on the package's logger. Under anomalib's CLI it appears twice, as anomalib
    configures logging: plain on stderr (paths can be copied from there) and through Rich on stdout."""
    logger.info(message)


class RunSummary(Callback):
    """Print the TensorBoard/log directory when training starts and the output paths when testing ends."""

    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the log directories and the command that shows them."""
        del pl_module
        for log in trainer.loggers:
            log_dir = getattr(log, "log_dir", None) or getattr(log, "save_dir", None)
            if log_dir:
                kind = type(log).__name__
                say(f"{kind} logs: {Path(log_dir).resolve()}  (view: tensorboard --logdir {Path(log_dir).resolve()})")
        if not trainer.loggers:
            say("no logger configured: add trainer.logger to the config to keep loss curves")

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the result images, checkpoint and run directory."""
        del pl_module
        say(f"run directory: {Path(trainer.default_root_dir).resolve()}")
        images = Path(trainer.default_root_dir) / "images"
        if images.is_dir():
            say(f"result images ({sum(1 for _ in images.rglob('*.png'))} PNG): {images.resolve()}")
        checkpoint = trainer.ckpt_path or getattr(trainer.checkpoint_callback, "best_model_path", "")
        if checkpoint:
            say(f"checkpoint: {Path(checkpoint).resolve()}")

    @rank_zero_only
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the prediction images."""
        del pl_module
        images = Path(trainer.default_root_dir) / "images"
        if images.is_dir():
            say(f"prediction images ({sum(1 for _ in images.rglob('*.png'))} PNG): {images.resolve()}")


class PredictionRecords(Callback):
    """Write one JSON-lines record per predicted image (``anomalib predict``): normalised anomaly score, label, the
    thresholds used and the defect regions in original-image pixels (:func:`anomalib_ssimae.deploy.records.prediction_record`).

    The file is ``<default_root_dir>/predictions-<YYYYmmdd-HHMMSS>.jsonl``: a new file per run, written as
    ``.partial`` while predicting and renamed at the end, so earlier results are never overwritten.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._file = None
        self._warned = False

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open a new records file."""
        del pl_module
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        path, number = root / f"predictions-{stamp}.jsonl", 1
        while path.exists() or path.with_name(path.name + ".partial").exists():
            number += 1
            path = root / f"predictions-{stamp}-{number}.jsonl"
        self._path = path
        self._file = path.with_name(path.name + ".partial").open("w")

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
        labels = outputs.pred_label if _is_bool(outputs.pred_label) else None  # None: no threshold in the model
        masks = outputs.pred_mask if _is_bool(outputs.pred_mask) else None
        visualizer_dir = getattr(pl_module.visualizer, "output_dir", None)
        datamodule = getattr(trainer, "datamodule", None)
        for index, image_path in enumerate(outputs.image_path):
            overlay = None
            if visualizer_dir is not None:  # the panel anomalib's visualizer wrote for this image (same rule)
                overlay = generate_output_filename(
                    input_path=image_path,
                    output_path=visualizer_dir,
                    dataset_name=getattr(datamodule, "name", None),
                    category=getattr(datamodule, "category", None),
                )
            with Image.open(image_path) as image:
                size = (image.height, image.width)
            mask = masks[index].detach().cpu().numpy().reshape(masks.shape[-2:]) if masks is not None else None
            label = bool(labels[index]) if labels is not None else None
            record = prediction_record(
                image_path, size, float(outputs.pred_score[index]), label, mask, thresholds, overlay
            )
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close and publish the records file."""
        del trainer, pl_module
        if self._file is not None:
            self._file.close()
            self._path.with_name(self._path.name + ".partial").replace(self._path)
            say(f"prediction records (JSON lines): {self._path.resolve()}")
            self._file = None


def _is_bool(tensor: Any) -> bool:
    """A boolean tensor (anomalib leaves scores unthresholded, as floats, when it has no threshold)."""
    return tensor is not None and getattr(tensor, "dtype", None) == torch.bool


class ValidationMonitor(Callback):
    """Warn once about validation sets that make thresholds or ``val_loss`` meaningless; show reconstructions.

    Reads the reconstruction the model's ``validation_step`` attaches to its output batch (``outputs.reconstruction``,
    ``(B, C, H, W)``), so nothing is computed twice. Writes up to 4 image/reconstruction pairs per epoch to
    TensorBoard (``val/image_and_reconstruction``) and logs a warning when the reconstructions collapse to uniform
    images, the failure users report most.
    """

    def __init__(self) -> None:
        self._defective = 0
        self._warned_thresholds = False
        self._warned_val_loss = False

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reset the count of defective validation images."""
        del trainer, pl_module
        self._defective = 0

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Count defective images; picture the first batch's reconstructions."""
        del batch, dataloader_idx
        if outputs.gt_label is not None:
            self._defective += int(outputs.gt_label.bool().sum())
        reconstruction = getattr(outputs, "reconstruction", None)
        if batch_idx != 0 or reconstruction is None:
            return
        inputs = to_model_channels(outputs.image, reconstruction.shape[1])  # what the network saw
        uniform = reconstruction.float().std(dim=(1, 2, 3)).max() < 1e-3 < inputs.float().std(dim=(1, 2, 3)).max()
        if uniform and trainer.global_step >= 300:
            logger.warning(
                "Epoch %d, step %d: the reconstructions are uniform images (collapse); check the learning "
                "rate and data.",
                trainer.current_epoch,
                trainer.global_step,
            )
        for log in trainer.loggers:
            if isinstance(log, TensorBoardLogger):
                pairs = torch.cat([inputs[:4], reconstruction[:4]], dim=3).float().clamp(0, 1)
                log.experiment.add_images("val/image_and_reconstruction", pairs, trainer.current_epoch)
        del pl_module

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn once when no defect-free validation image exists (then ``val_loss`` is missing), and once when the
        F1-adaptive threshold is in use without any defective validation image (it then flags almost everything)."""
        post = pl_module.post_processor
        f1_adaptive = isinstance(post, PostProcessor) and not isinstance(post, DefectFreePostProcessor)
        if f1_adaptive and post.enable_thresholding and self._defective == 0 and not self._warned_thresholds:
            self._warned_thresholds = True
            warnings.warn(
                "The validation set has no defective images, but the thresholds come from anomalib's F1-adaptive "
                "metric, which then falls back to the highest validation score: an operating point nobody chose. "
                "Use post_processor: {class_path: anomalib_ssimae.post_processing.DefectFreePostProcessor} to set "
                "them for a false-positive rate on defect-free images instead.",
                stacklevel=1,
            )
        if "val_loss" not in trainer.callback_metrics and not self._warned_val_loss:
            self._warned_val_loss = True
            warnings.warn(
                "The validation set has no defect-free images, so val_loss is not logged and EarlyStopping or "
                "ModelCheckpoint monitoring val_loss cannot work. Give the datamodule defect-free validation images "
                "(e.g. val_split_mode: from_test).",
                stacklevel=1,
            )
