"""Result pictures: anomalib's panel (image, ground truth, anomaly-map and predicted-mask overlays) plus the
reconstruction, because users of autoencoders want to see what the network made of the image (blur, collapse,
a defect reconstructed away).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image, visualize_image
from anomalib.visualization.image.item_visualizer import visualize_image_item
from PIL import Image

from anomalib_ssimae.data.images import dataset_image_paths
from anomalib_ssimae.records import (
    common_folder,
    picture_name,
    remove_if_empty,
    reserve_prediction_run,
    reserve_run_folder,
    save_image_atomic,
)

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)


class ReconstructionVisualizer(ImageVisualizer):
    """:class:`anomalib.visualization.ImageVisualizer` with the stitched reconstruction appended to each panel.

    Takes the same arguments; ``field_size`` pixels per tile. The reconstruction is the one the model's step
    attached to its output batch; if it is missing, it is recomputed with the model's ``reconstruct`` (no gradients).

    Where the panels go (``<pictures>`` is ``output_dir``, by default ``<default_root_dir>/images``; each run gets
    a new folder, so no run ever writes over another's pictures):

    - test: ``<pictures>/test-<YYYYmmdd-HHMMSS>[-N]/``, created with the run's first picture;
    - predict: ``<pictures>/predictions-<YYYYmmdd-HHMMSS>[-N]/``, named like the run's records file
      (:class:`~anomalib_ssimae.callbacks.PredictionRecords`).

    In both, each image keeps its path below the deepest folder common to all images of the run
    (:func:`~anomalib_ssimae.records.common_folder`): ``lineA/good/001.png`` and ``lineB/good/001.png`` stay
    two pictures (anomalib's visualizer keeps only the path after the dataset's name and category, or else the
    parent folder's name, so a ``Folder`` dataset's ``lineA/good/001.png`` and ``lineB/good/001.png`` both became
    ``good/001.png`` and the second replaced the first). A path listed twice in one run gets ``_2``, ``_3``... with
    a warning, and a picture appears under its name only once complete. A run that fails before its first picture
    leaves no empty folder behind.

    The path of each panel is attached to the output batch as ``visualization_path`` (a list, ``None`` where no
    panel was drawn), for the prediction records; ``test_dir`` and ``predict_dir`` name the last run's folders.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.predict_run: str | None = None  # the current predict run's name (records file and picture folder)
        self.predict_dir: Path | None = None
        self.test_dir: Path | None = None  # the current test run's picture folder (None until its first picture)
        self._input_root: Path | None = None
        self._written: set[Path] = set()
        self._running: Path | None = None  # the picture folder of the run in progress

    def _pictures(self, trainer: Trainer) -> Path:
        """``output_dir``, or ``<default_root_dir>/images`` of this run (never remembered: the next run may have
        another ``default_root_dir``)."""
        return Path(self.output_dir) if self.output_dir is not None else Path(trainer.default_root_dir) / "images"

    def _find_input_root(self, loaders: Any) -> None:
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        self._input_root = common_folder(
            path for loader in loaders for path in dataset_image_paths(getattr(loader, "dataset", None))
        )
        self._written = set()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Create this run's picture folder; find the folder common to all images to predict."""
        del pl_module
        pictures = self._pictures(trainer)
        self.predict_run = reserve_prediction_run(Path(trainer.default_root_dir), pictures)
        self.predict_dir = self._running = pictures / self.predict_run
        self._find_input_root(trainer.predict_dataloaders)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the run (its name and folder stay readable until the next predict)."""
        del trainer, pl_module
        self._written, self._running = set(), None

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Find the folder common to all test images (the picture folder is made with the first picture, after
        :class:`~anomalib_ssimae.callbacks.RunFolder` has chosen the run folder)."""
        del pl_module
        self.test_dir = None
        self._find_input_root(trainer.test_dataloaders)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the run (``test_dir`` stays readable until the next test)."""
        del trainer, pl_module
        self._written, self._running = set(), None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Remove this run's picture folder if the run failed before writing any picture into it."""
        del trainer, pl_module, exception
        if remove_if_empty(self._running):
            logger.info("removed the empty picture folder %s of the failed run", self._running)
        self._running = None

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write one panel per image of the batch into this run's folder."""
        del batch_idx, dataloader_idx
        if self.test_dir is None:
            self.test_dir = self._running = reserve_run_folder(self._pictures(trainer), "test")
        self._write_panels(pl_module, outputs, batch, self.test_dir)

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write one panel per image of the batch into this run's folder."""
        del batch_idx, dataloader_idx
        if self.predict_dir is None:  # called without on_predict_start (not through a Trainer)
            self.on_predict_start(trainer, pl_module)
        self._write_panels(pl_module, outputs, batch, self.predict_dir)

    def _write_panels(self, pl_module: LightningModule, outputs: ImageBatch, batch: ImageBatch, folder: Path) -> None:
        reconstructions = getattr(outputs, "reconstruction", None)  # set by the model's test/validation step
        if reconstructions is None:
            with torch.no_grad():
                reconstructions = pl_module.model.reconstruct(batch.image).reconstruction
        written: list[str | None] = []
        for item, reconstruction in zip(batch, reconstructions, strict=True):
            panel = visualize_image_item(
                item,
                fields=self.fields,
                overlay_fields=self.overlay_fields,
                field_size=self.field_size,
                fields_config=self.fields_config,
                overlay_fields_config=self.overlay_fields_config,
                text_config=self.text_config,
            )
            if panel is None:
                written.append(None)
                continue
            tile = visualize_image(reconstruction.float().clamp(0, 1).expand(3, -1, -1).cpu())
            tile = tile.resize(self.field_size)
            if self.text_config.get("enable", True):
                options = {k: v for k, v in self.text_config.items() if k != "enable"}
                tile = add_text_to_image(tile, "Reconstruction", **options)
            combined = Image.new("RGB", (panel.width + tile.width, max(panel.height, tile.height)))
            combined.paste(panel, (0, 0))
            combined.paste(tile, (panel.width, 0))
            filename = self._filename(item.image_path or "", folder)
            save_image_atomic(combined, filename)
            written.append(str(filename))
        outputs.visualization_path = written

    def _filename(self, image_path: str, folder: Path) -> Path:
        """``<folder>/<path below the common input folder>``; a second picture for the same path in one run
        (a dataset listing a file twice) gets ``_2``, ``_3``... instead of replacing the first, and so does a
        name that exists already."""
        path = Path(image_path).absolute()
        try:
            relative = path.relative_to(self._input_root) if self._input_root is not None else None
        except ValueError:
            relative = None
        if relative is None:  # not among the dataset's listed files: anomalib's rule (the parent folder's name)
            relative = Path(path.parent.name, path.name)
        relative = relative.with_name(picture_name(relative.name))
        target = folder / relative
        number = 1
        while target in self._written or target.exists():
            number += 1
            target = folder / relative.with_name(f"{relative.stem}_{number}{relative.suffix}")
        if number > 1:
            logger.warning("%s: a picture of this path exists in this run already; writing %s", image_path, target)
        self._written.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
