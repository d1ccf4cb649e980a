"""Result pictures: anomalib's panel (image, ground truth, anomaly-map and predicted-mask overlays) plus the
reconstruction, because users of autoencoders want to see what the network made of the image (blur, collapse,
a defect reconstructed away).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image, visualize_image
from anomalib.visualization.image.item_visualizer import visualize_image_item
from PIL import Image

from anomalib_ssimae.data.images import dataset_image_paths
from anomalib_ssimae.deploy.records import common_folder, picture_name, reserve_prediction_run, save_image_atomic

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)


class ReconstructionVisualizer(ImageVisualizer):
    """:class:`anomalib.visualization.ImageVisualizer` with the stitched reconstruction appended to each panel.

    Takes the same arguments; ``field_size`` pixels per tile. The reconstruction is the one the model's step
    attached to its output batch; if it is missing, it is recomputed with the model's ``reconstruct`` (no gradients).

    Where the panels go (``<pictures>`` is ``output_dir``, by default ``<default_root_dir>/images``):

    - test: ``<pictures>/<path after the dataset's category>``, as anomalib's visualizer names them;
    - predict: a new folder per run, ``<pictures>/predictions-<YYYYmmdd-HHMMSS>[-N]/``, named like the run's records
      file (:class:`~anomalib_ssimae.callbacks.PredictionRecords`), holding each image at its path below the
      deepest folder common to all predicted images (``line1/good/000.png`` and ``line2/good/000.png`` stay two
      pictures). Earlier runs' pictures are never overwritten, and a picture appears under its name only once
      complete.

    The path of each panel is attached to the output batch as ``visualization_path`` (a list, ``None`` where no
    panel was drawn), for the prediction records.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.predict_run: str | None = None  # the current predict run's name (records file and picture folder)
        self.predict_dir: Path | None = None
        self._input_root: Path | None = None
        self._written: set[Path] = set()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Create this run's picture folder; find the folder common to all images to predict."""
        del pl_module
        pictures = Path(self.output_dir) if self.output_dir is not None else Path(trainer.default_root_dir) / "images"
        self.predict_run = reserve_prediction_run(Path(trainer.default_root_dir), pictures)
        self.predict_dir = pictures / self.predict_run
        loaders = trainer.predict_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        self._input_root = common_folder(
            path for loader in loaders for path in dataset_image_paths(getattr(loader, "dataset", None))
        )
        self._written = set()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the run (its name and folder stay readable until the next predict)."""
        del trainer, pl_module
        self._written = set()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write one panel per image of the batch (test: anomalib's names)."""
        del batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        self._write_panels(trainer, pl_module, outputs, batch, predict=False)

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
        self._write_panels(trainer, pl_module, outputs, batch, predict=True)

    def _write_panels(
        self, trainer: Trainer, pl_module: LightningModule, outputs: ImageBatch, batch: ImageBatch, predict: bool
    ) -> None:
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
            image_path = item.image_path or ""
            filename = self._predict_filename(image_path) if predict else self._test_filename(trainer, image_path)
            save_image_atomic(combined, filename)
            written.append(str(filename))
        outputs.visualization_path = written

    def _test_filename(self, trainer: Trainer, image_path: str) -> Path:
        """anomalib's name: ``<output_dir>/<path after the dataset's name and category>``."""
        datamodule = getattr(trainer, "datamodule", None)
        path = generate_output_filename(
            input_path=image_path,
            output_path=self.output_dir,
            dataset_name=getattr(datamodule, "name", None),
            category=getattr(datamodule, "category", None),
        )
        return path.with_name(picture_name(path.name))

    def _predict_filename(self, image_path: str) -> Path:
        """``<run folder>/<path below the common input folder>``; a second picture for the same path in one run
        (a dataset listing a file twice) gets ``_2``, ``_3``... instead of replacing the first."""
        path = Path(image_path).absolute()
        try:
            relative = path.relative_to(self._input_root) if self._input_root is not None else None
        except ValueError:
            relative = None
        if relative is None:  # not among the dataset's listed files: anomalib's rule (the parent folder's name)
            relative = Path(path.parent.name, path.name)
        relative = relative.with_name(picture_name(relative.name))
        target = self.predict_dir / relative
        number = 1
        while target in self._written or target.exists():
            number += 1
            target = self.predict_dir / relative.with_name(f"{relative.stem}_{number}{relative.suffix}")
        if number > 1:
            logger.warning("%s: a picture of this path exists in this run already; writing %s", image_path, target)
        self._written.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
