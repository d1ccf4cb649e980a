"""Callbacks the model adds to every run: where things are (:class:`RunSummary`), JSON-lines records of
``anomalib predict`` (:class:`PredictionRecords`), and validation checks and TensorBoard pictures
(:class:`ValidationMonitor`)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from anomalib.post_processing import PostProcessor
from anomalib.utils.path import generate_output_filename
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image

from anomalib_ssimae.deploy.records import (
    OUT_OF_DISTRIBUTION,
    json_number,
    prediction_record,
    reserve_prediction_run,
    warn_if_upscaled,
)
from anomalib_ssimae.post_processing import DefectFreePostProcessor, defect_free_count

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
        say(f"run directory: {Path(trainer.default_root_dir).resolve()}")
        if hasattr(pl_module.visualizer, "test_dir"):  # ReconstructionVisualizer: this test's own folder
            images = pl_module.visualizer.test_dir
        else:  # another visualizer: anomalib's folder
            images = Path(trainer.default_root_dir) / "images"
        if images is not None and images.is_dir():
            say(f"result images ({sum(1 for _ in images.rglob('*.png'))} PNG): {images.resolve()}")
        own = pl_module.__dict__.pop("_tested_checkpoint", None)  # a resumed run tested its own weights
        checkpoint = own or trainer.ckpt_path or getattr(trainer.checkpoint_callback, "best_model_path", "")
        if checkpoint:
            say(f"checkpoint: {Path(checkpoint).resolve()}")

    @rank_zero_only
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name this run's prediction pictures."""
        folder = getattr(pl_module.visualizer, "predict_dir", None)
        if folder is None:  # another visualizer: anomalib's folder
            folder = Path(trainer.default_root_dir) / "images"
        if folder.is_dir():
            count = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
            say(f"prediction images ({count}): {folder.resolve()}")


class PredictionRecords(Callback):
    """Write one JSON-lines record per predicted image (``anomalib predict``): normalised anomaly score, label, the
    thresholds used and the defect regions in original-image pixels (:func:`anomalib_ssimae.deploy.records.prediction_record`).

    The file is ``<default_root_dir>/predictions-<YYYYmmdd-HHMMSS>[-N].jsonl``, a new file per run named like the
    run's picture folder (:class:`~anomalib_ssimae.visualization.ReconstructionVisualizer`), written as ``.partial``
    while predicting and renamed at the end, so earlier results are never overwritten. ``overlay`` is the picture
    the visualizer wrote for the image. Images that the resize to the model's ``image_size`` enlarges more than
    :data:`~anomalib_ssimae.deploy.records.MAX_UPSCALE` times get a warning naming them. A file that cannot be read
    (the model's ``setup`` dropped it from the dataset) gets a record with ``"image"`` and ``"error"`` only, as in
    ``ssimae-predict``.
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
        for path, error in getattr(pl_module, "_unreadable", []):  # dropped from the dataset: a record each
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


class ValidationMonitor(Callback):
    """Refuse, before training, a validation split without defect-free images when a callback needs ``val_loss``;
    warn once about validation sets that make thresholds or ``val_loss`` meaningless; show reconstructions.

    ``val_loss`` is the loss on the defect-free validation images only: without any, it is never logged, and
    ``EarlyStopping(monitor="val_loss")`` (strict, as in ``configs/model/*.yaml``) or
    ``ModelCheckpoint(monitor="val_loss")`` would stop the run after its first epoch.

    Reads the reconstruction the model's ``validation_step`` attaches to its output batch
    (``outputs.reconstruction``, ``(B, C, H, W)``), so nothing is computed twice. Writes up to 4
    image/reconstruction pairs per epoch to TensorBoard (``val/image_and_reconstruction``) and logs a warning when
    the reconstructions collapse to uniform images, the failure users report most.
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
