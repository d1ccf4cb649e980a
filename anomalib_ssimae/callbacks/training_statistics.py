"""What the model learns from its defect-free training images besides the network (:class:`TrainingStatistics`): the
frame check's intensity histograms (:class:`~anomalib_ssimae.models.ssim_ae.frame_check.FrameCheck`) and the
position normalisation's expected residual per position
(:class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.PositionNormalization`). Both are buffers of the model, so
checkpoints and exported graphs carry them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchvision.transforms.v2 import Resize

from anomalib_ssimae.components.random_state import preserved_random_state


def training_images(trainer: Trainer | None, pl_module: LightningModule, count: int) -> Iterator[torch.Tensor] | None:
    """Batches ``(<= 8, 3, H, W)`` of up to ``count`` training images of the trainer's datamodule (evenly spaced,
    resized as in training), on the model's device; ``None`` when no training images are at hand."""
    dataset = getattr(getattr(trainer, "datamodule", None), "train_data", None)
    if not dataset:
        return None
    resize = getattr(pl_module.pre_processor, "transform", None) or Resize(pl_module._image_size, antialias=False)
    count = min(len(dataset), count)
    indices = sorted({i * len(dataset) // count for i in range(count)})
    return (
        torch.cat([resize(dataset[i].image[None]) for i in indices[start : start + 8]]).to(pl_module.device)
        for start in range(0, len(indices), 8)
    )


@torch.no_grad()
def fit_position_normalization(trainer: Trainer | None, pl_module: LightningModule) -> bool:
    """Estimate the expected defect-free residual per position from up to ``position_images`` training images of the
    trainer's datamodule (evenly spaced, pre-processed as in training). Returns ``False`` when the model has no
    position normalisation or there are no training images at hand."""
    batches = training_images(trainer, pl_module, pl_module.hparams.position_images)
    if pl_module.model.anomaly_map_generator.position is None or batches is None:
        return False
    pl_module.model.fit_position_normalization(batches)
    return True


def fit_frame_check(trainer: Trainer | None, pl_module: LightningModule) -> bool:
    """Fit the frame check on as many training images of the trainer's datamodule as it keeps histograms (256).
    Returns ``False`` when fewer than 2 are at hand."""
    batches = training_images(trainer, pl_module, len(pl_module.model.frame_check.memory))
    if batches is None:
        return False
    with preserved_random_state():  # reading images must not move the training's random numbers
        batches = list(batches)
    if sum(len(b) for b in batches) < 2:
        return False
    pl_module.model.fit_frame_check(batches)
    return True


class TrainingStatistics(Callback):
    """Fit the frame check when training starts (from the training images' histograms: the network plays no part),
    re-estimate the position normalisation with the current network before every validation's maps, and at test or
    predict start fit what no training fitted (a checkpoint of anomalib-ssimae 0.3.0, or no validation), or warn that
    it cannot."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fit the frame check."""
        if not fit_frame_check(trainer, pl_module):
            warnings.warn("fewer than 2 training images: the frame check stays off", stacklevel=1)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Re-estimate the position normalisation with the current network, before the validation maps."""
        fit_position_normalization(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Estimate the position normalisation and fit the frame check if needed."""
        self._ensure_fitted(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """As :meth:`on_test_start`."""
        self._ensure_fitted(trainer, pl_module)

    @staticmethod
    def _ensure_fitted(trainer: Trainer, pl_module: LightningModule) -> None:
        position = pl_module.model.anomaly_map_generator.position
        if position is not None and not bool(position.fitted) and not fit_position_normalization(trainer, pl_module):
            warnings.warn(
                "position_normalization is on but was never estimated (no validation ran and no training "
                "images are at hand): the anomaly maps are not normalised",
                stacklevel=1,
            )
        if not bool(pl_module.model.frame_check.fitted) and not fit_frame_check(trainer, pl_module):
            warnings.warn(
                "the frame check is not fitted (a checkpoint of anomalib-ssimae 0.3.0, and no training images at "
                "hand): blank, saturated or inverted frames are not rejected; test once with the data config that "
                "trained the model, or train again",
                stacklevel=1,
            )
