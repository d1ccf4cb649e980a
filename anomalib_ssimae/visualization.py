"""Result pictures: anomalib's panel (image, ground truth, anomaly-map and predicted-mask overlays) plus the
reconstruction, because users of autoencoders want to see what the network made of the image (blur, collapse,
a defect reconstructed away).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image, visualize_image
from anomalib.visualization.image.item_visualizer import visualize_image_item
from PIL import Image

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from lightning.pytorch import LightningModule, Trainer


class ReconstructionVisualizer(ImageVisualizer):
    """:class:`anomalib.visualization.ImageVisualizer` with the stitched reconstruction appended to each panel.

    Takes the same arguments. One PNG per test/predict image under ``<default_root_dir>/images/`` (same names as
    anomalib's), ``field_size`` pixels per tile. The reconstruction is the one the model's step attached to its
    output batch; if it is missing, it is recomputed with the model's ``reconstruct`` (no gradients).
    """

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write one panel per image of the batch."""
        del batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        reconstructions = getattr(outputs, "reconstruction", None)  # set by the model's test/validation step
        if reconstructions is None:
            with torch.no_grad():
                reconstructions = pl_module.model.reconstruct(batch.image).reconstruction
        datamodule = getattr(trainer, "datamodule", None)
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
                continue
            tile = visualize_image(reconstruction.float().clamp(0, 1).expand(3, -1, -1).cpu())
            tile = tile.resize(self.field_size)
            if self.text_config.get("enable", True):
                options = {k: v for k, v in self.text_config.items() if k != "enable"}
                tile = add_text_to_image(tile, "Reconstruction", **options)
            combined = Image.new("RGB", (panel.width + tile.width, max(panel.height, tile.height)))
            combined.paste(panel, (0, 0))
            combined.paste(tile, (panel.width, 0))
            filename = generate_output_filename(
                input_path=item.image_path or "",
                output_path=self.output_dir,
                dataset_name=getattr(datamodule, "name", None),
                category=getattr(datamodule, "category", None),
            )
            combined.save(filename)
