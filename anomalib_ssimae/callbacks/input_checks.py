"""Image checks before training, testing and ``anomalib predict`` (:class:`InputChecks`).

anomalib's loaders read every image as 8-bit RGB: a 16-bit gray file becomes white, the colours under transparent
pixels are scored, a truncated file fails inside a dataloader worker without its name
(:mod:`anomalib_ssimae.data.images`). The package cannot change those loaders, so it checks the files before the
loaders read them.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_ssimae.data.images import (
    check_datamodule_images,
    check_image_files,
    dataset_image_paths,
    skip_hidden_files,
    skip_unreadable_files,
)


class InputChecks(Callback):
    """Check the images of each stage before it starts (:func:`~anomalib_ssimae.data.images.check_datamodule_images`,
    which names the first bad file), and make ``anomalib predict`` skip hidden files and record unreadable ones.

    - fit: the training and validation images; test: the test images;
    - predict: hidden files (:func:`~anomalib_ssimae.data.images.skip_hidden_files`) and unreadable ones
      (:func:`~anomalib_ssimae.data.images.skip_unreadable_files`) are dropped from anomalib's ``PredictDataset``,
      the latter kept in :attr:`unreadable` with their error for
      :class:`~anomalib_ssimae.callbacks.PredictionRecords`; the rest are checked before the first batch.
    """

    def __init__(self) -> None:
        self.unreadable: list[tuple[Path, str]] = []  # (file, error) of this predict run

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the training and validation images."""
        del pl_module
        check_datamodule_images(trainer.datamodule, "train_data", "val_data")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the test images."""
        del pl_module
        check_datamodule_images(trainer.datamodule, "test_data")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """``anomalib predict``: drop hidden and unreadable files from the predict datasets (see the class
        docstring)."""
        del pl_module
        if stage != "predict":
            return
        # Here, not in on_predict_start: by then Lightning has counted the batches and started the loader workers
        # with the full list. trainer.predict_dataloaders is not set yet: take them where trainer.predict put them.
        source = getattr(getattr(trainer.predict_loop, "_data_source", None), "instance", None)
        self.unreadable = []
        for loader in source if isinstance(source, list | tuple) else [source]:
            skip_hidden_files(getattr(loader, "dataset", None))
            self.unreadable += skip_unreadable_files(getattr(loader, "dataset", None))

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the images to predict: anomalib's loader would read a 16-bit gray file as white, or the colours
        under transparent pixels, and score them."""
        del pl_module
        loaders = trainer.predict_dataloaders
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            check_image_files(dataset_image_paths(getattr(loader, "dataset", None)))
