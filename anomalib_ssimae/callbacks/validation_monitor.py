"""Validation checks and TensorBoard pictures (:class:`ValidationMonitor`)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from anomalib.post_processing import PostProcessor
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from anomalib_ssimae.callbacks.training_guards import warn_if_uniform
from anomalib_ssimae.post_processing import DefectFreePostProcessor, defect_free_count


class ValidationMonitor(Callback):
    """Refuse, before training, a validation split without defect-free images when a callback needs ``val_loss``;
    warn once about validation sets that make thresholds or ``val_loss`` meaningless; show reconstructions.

    ``val_loss`` is the loss on the defect-free validation images only: without any, it is never logged, and
    ``EarlyStopping(monitor="val_loss")`` (strict, as in ``configs/model/*.yaml``) or
    ``ModelCheckpoint(monitor="val_loss")`` would stop the run after its first epoch.

    Reads the reconstruction the model's ``validation_step`` attaches to its output batch
    (``outputs.reconstruction``, ``(B, C, H, W)``), so nothing is computed twice. Writes up to 4
    image/reconstruction pairs per epoch to TensorBoard (``val/image_and_reconstruction``) and logs a warning when
    the reconstructions collapse to uniform images, the failure users report most
    (:func:`~anomalib_ssimae.callbacks.training_guards.warn_if_uniform`, beside the training's collapse check).
    """

    def __init__(self) -> None:
        self._defective = 0
        self._warned_thresholds = False
        self._warned_val_loss = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuse training when a callback monitors ``val_loss`` and the datamodule's validation split has no
        defect-free image (see the class docstring).

        Raises:
            ValueError: naming the callbacks and the split's size.
        """
        del pl_module
        datamodule = getattr(trainer, "datamodule", None)
        val_data = getattr(datamodule, "val_data", None)
        if defect_free_count(val_data) != 0:  # some, or cannot tell
            return
        needs = [
            type(callback).__name__
            for callback in trainer.callbacks
            if (isinstance(callback, EarlyStopping) and callback.monitor == "val_loss" and callback.strict)
            or (isinstance(callback, ModelCheckpoint) and callback.monitor == "val_loss")
        ]
        if needs:
            msg = (
                f"{' and '.join(needs)} monitor val_loss, but the validation split ({len(val_data)} images) has no "
                "defect-free image, so val_loss (the loss on defect-free validation images) is never logged and "
                "training would stop after its first epoch. Give the validation split defect-free images (e.g. "
                "data.init_args.val_split_mode: from_test with defect-free test images, or from_train), or remove "
                "the callback."
            )
            raise ValueError(msg)

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
        inputs = pl_module.model.prepare(outputs.image)  # what the network saw
        warn_if_uniform(trainer, inputs, reconstruction)
        for log in trainer.loggers:
            if isinstance(log, TensorBoardLogger):
                pairs = torch.cat([inputs[:4], reconstruction[:4]], dim=3).float().clamp(0, 1)
                log.experiment.add_images("val/image_and_reconstruction", pairs, trainer.current_epoch)

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
