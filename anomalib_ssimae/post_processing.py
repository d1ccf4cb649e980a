"""Thresholds from defect-free images: anomalib's PostProcessor with the thresholds set for a false-positive rate.

anomalib's default thresholds maximise F1 on the validation set and so need defective validation images; with only
defect-free ones anomalib 2.7's F1-adaptive threshold falls back to the highest validation score, an operating
point nobody chose (earlier versions took the lowest and flagged everything). Here the
image threshold is the ``1 - image_fpr`` quantile of the anomaly scores of the defect-free validation images, and
the pixel threshold the ``1 - pixel_fpr`` quantile of their anomaly-map pixels, optionally raised by Bergmann's
minimum-defect-area rule (Bergmann et al., CVPR 2019, §4.2: the smallest threshold at which no connected region
on the defect-free validation images reaches ``min_defect_area`` pixels). Normalisation, the baked thresholds in the
exported graph and the sensitivity are anomalib's (``PostProcessor``): a score at the threshold maps to 0.5.

The quantiles of the defect-free scores and pixels at a fixed grid of false-positive rates (:data:`FPR_GRID`) are
kept as buffers, so the checkpoint and the export metadata can move the operating point later without retraining
(:meth:`DefectFreePostProcessor.set_false_positive_rates`, ``anomalib_ssimae.deploy``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from anomalib.data import Batch
from anomalib.post_processing import PostProcessor
from lightning.pytorch import LightningModule, Trainer
from scipy import ndimage

from anomalib_ssimae.components.distributed import from_all_processes
from anomalib_ssimae.fpr import FPR_GRID as FPR_GRID_ARRAY
from anomalib_ssimae.fpr import MIN_FPR, interpolate_fpr  # torch-free (ssimae-predict); importable from here too

logger = logging.getLogger(__name__)

# 1, 0.794, ..., 1e-6: ten points per decade, float64 (61,); the same values as anomalib_ssimae.fpr.FPR_GRID
FPR_GRID = torch.tensor(FPR_GRID_ARRAY, dtype=torch.float64)
MIN_CALIBRATION_IMAGES = 2  # defect-free validation images needed to fit the thresholds


def check_fpr(name: str, value: float) -> None:
    """Refuse a false-positive rate outside [:data:`MIN_FPR`, 1) (``name``: the argument, e.g. ``image_fpr``)."""
    if not MIN_FPR <= value < 1:
        msg = f"{name} is a false-positive rate and must be in [{MIN_FPR:g}, 1), got {value:g}" + (
            f": the defect-free quantiles are stored down to {MIN_FPR:g} (FPR_GRID), and no validation set "
            "resolves a smaller rate"
            if 0 <= value < MIN_FPR
            else ""
        )
        raise ValueError(msg)


def too_few_images(count: int) -> str:
    """The error for a validation split with ``count`` (< :data:`MIN_CALIBRATION_IMAGES`) defect-free images."""
    why = (
        "There is nothing to set the thresholds on (the configured post-processor needs defect-free validation "
        "images; without them the thresholds would be anomalib's F1-adaptive ones, an operating point nobody chose)."
        if count == 0
        else "A threshold fitted on one image is its own score, which about half of similar defect-free images "
        "exceed (they would be called anomalous), and the normalisation range collapses (scores of exactly 0 or 1)."
    )
    return (
        f"DefectFreePostProcessor: the validation split has {count} defect-free image{'' if count == 1 else 's'}; "
        f"at least {MIN_CALIBRATION_IMAGES} are needed (about 1 / image_fpr for the rate to hold). {why} Give the "
        "validation split more defect-free images: raise data.init_args.val_split_ratio, or add images to the "
        "defect-free test folder (normal_test_dir) for from_test splits, or use val_split_mode: from_train."
    )


def defect_free_count(dataset: object) -> int | None:
    """Defect-free images of an anomalib dataset (``samples.label_index == 0``); ``None`` if it cannot tell."""
    samples = getattr(dataset, "samples", None)
    if samples is None or "label_index" not in getattr(samples, "columns", ()):
        return None
    return int((samples["label_index"] == 0).sum())


def _normal_images(batch: Batch) -> torch.Tensor:
    """Boolean ``(B,)``: the defect-free images of a validation batch (all of them when labels are missing)."""
    if batch.gt_label is None:
        return torch.ones(len(batch.pred_score), dtype=torch.bool)
    return ~batch.gt_label.detach().bool().cpu().reshape(-1)


def fpr_quantiles(values: np.ndarray, fprs: torch.Tensor = FPR_GRID) -> torch.Tensor:
    """For each rate ``f`` of ``fprs``, the smallest ``t`` among ``values`` with ``mean(values > t) <= f``.

    ``values``: any shape, defect-free scores or pixels; ``fprs`` in [0, 1] (0 gives the maximum). Returns float64
    ``(len(fprs),)``. Example: 100 scores 1..100 and f = 0.05 give 95 (five scores, 96..100, lie above it).
    """
    flat = np.sort(values.reshape(-1))
    index = np.ceil((1 - fprs.numpy()) * len(flat) - 1e-9).astype(np.int64) - 1
    return torch.from_numpy(flat[np.clip(index, 0, len(flat) - 1)].astype(np.float64))


def largest_region(maps: np.ndarray, threshold: float) -> int:
    """Pixels in the largest 8-connected region of ``maps > threshold`` over all maps ``(N, H, W)``."""
    largest = 0
    for anomaly_map in maps[maps.reshape(len(maps), -1).max(axis=1) > threshold]:  # maps with a pixel above only
        labels, count = ndimage.label(anomaly_map > threshold, structure=np.ones((3, 3)))
        if count:
            largest = max(largest, int(np.bincount(labels.ravel())[1:].max()))
    return largest


def min_area_threshold(maps: np.ndarray, min_defect_area: int, start: float, iterations: int = 30) -> float:
    """Smallest threshold ``>= start`` at which no region of ``maps > t`` (``(N, H, W)``) has ``min_defect_area``
    pixels or more; bisection, as region sizes only shrink when the threshold rises (Bergmann et al. 2019, §4.2).
    """
    if largest_region(maps, start) < min_defect_area:
        return start
    low, high = start, float(maps.max())  # at the maximum no pixel is above: no region
    for _ in range(iterations):
        middle = (low + high) / 2
        if largest_region(maps, middle) < min_defect_area:
            high = middle
        else:
            low = middle
    return high


class DefectFreePostProcessor(PostProcessor):
    """anomalib ``PostProcessor`` whose thresholds come from defect-free validation images only.

    Args:
        image_fpr: target fraction of defect-free images flagged as anomalous, in (0, 1) (default 0.01).
        pixel_fpr: target fraction of defect-free pixels in the predicted mask, in (0, 1) (default 0.001).
        min_defect_area: if set, pixels: raise the pixel threshold until no connected region on the defect-free
            validation images has this many pixels (at the model's ``image_size``), Bergmann et al. 2019 §4.2.
        max_calibration_images: defect-free validation maps kept per epoch for the pixel threshold (memory: 4 bytes
            per pixel); later images of the epoch still count for the image threshold.
        **kwargs: anomalib ``PostProcessor`` arguments (``enable_normalization``, sensitivities, ...).

    With fewer than two defect-free validation images, training stops with a ``ValueError`` before it starts, when
    the datamodule's validation split can be counted: without any, there is nothing to fit the thresholds on (and
    anomalib's F1-adaptive ones, fitted on defective images only, are an operating point nobody chose); a threshold
    fitted on one image is its own score, which about half of similar images exceed. Where the split cannot be
    counted (dataloaders without a datamodule), one image stops training at the end of the first validation, and
    none leaves the F1-adaptive thresholds, with a warning. Normalisation maps ``threshold +- half`` to [0, 1], ``half``
    the larger distance from the threshold to a validation value; when every validation value equals the threshold
    (``half = 0``) it falls back to ``half = |threshold|`` (1 for a zero threshold), with a warning: normalised
    ``0.5 + (x - t) / (2 |t|)``, so 0 maps to 0, the threshold to 0.5 and twice it to 1. Rates are refused outside
    [1e-6, 1) (:data:`MIN_FPR`, the end of :data:`FPR_GRID`). Buffers (in the checkpoint): the two thresholds and min/max as in ``PostProcessor``, plus
    ``image_fpr_quantiles`` and ``pixel_fpr_quantiles`` ``(61,)`` float64, the raw thresholds at :data:`FPR_GRID`.
    """

    def __init__(
        self,
        image_fpr: float = 0.01,
        pixel_fpr: float = 0.001,
        min_defect_area: int | None = None,
        max_calibration_images: int = 200,
        **kwargs: Any,
    ) -> None:
        if not kwargs.get("enable_normalization", True):
            msg = (
                "DefectFreePostProcessor needs enable_normalization=True: anomalib compares unnormalised outputs "
                "with 1 - sensitivity, not with the calibrated thresholds"
            )
            raise ValueError(msg)
        super().__init__(**kwargs)
        for name, value in (("image_fpr", image_fpr), ("pixel_fpr", pixel_fpr)):
            check_fpr(name, value)
        if min_defect_area is not None and min_defect_area < 1:
            msg = f"min_defect_area must be None or at least 1 pixel, got {min_defect_area}"
            raise ValueError(msg)
        self.image_fpr = image_fpr
        self.pixel_fpr = pixel_fpr
        self.min_defect_area = min_defect_area
        self.max_calibration_images = max_calibration_images
        self.register_buffer("image_fpr_quantiles", torch.full((len(FPR_GRID),), float("nan"), dtype=torch.float64))
        self.register_buffer("pixel_fpr_quantiles", torch.full((len(FPR_GRID),), float("nan"), dtype=torch.float64))
        self.register_buffer("calibration_images", torch.tensor(0))
        # the validation min/max before centring (the centred ranges are derived from these, never from themselves)
        self.register_buffer("observed_range", torch.full((4,), float("nan")))  # image min, max, pixel min, max
        self._scores: list[torch.Tensor] = []
        self._maps: list[torch.Tensor] = []

    @property
    def _checkpoint_config_keys(self) -> tuple[str, ...]:
        return (*super()._checkpoint_config_keys, "image_fpr", "pixel_fpr", "min_defect_area")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuse a validation split with fewer than two defect-free images before training (see the class
        docstring)."""
        del pl_module
        count = defect_free_count(getattr(getattr(trainer, "datamodule", None), "val_data", None))
        if count is not None and count < MIN_CALIBRATION_IMAGES:
            raise ValueError(too_few_images(count))

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the previous epoch's defect-free scores and maps."""
        del trainer, pl_module
        self._scores, self._maps = [], []

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Batch, *args: Any, **kwargs: Any
    ) -> None:
        """anomalib's updates (F1 fallback, min/max), plus the defect-free scores and maps of the batch."""
        super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)
        if outputs.pred_score is None:
            return
        normal = _normal_images(outputs)
        if normal.any():
            self._scores.append(outputs.pred_score.detach().float().cpu().reshape(-1)[normal])
            kept = sum(len(m) for m in self._maps)
            limit = -(-self.max_calibration_images // getattr(trainer, "world_size", 1))  # per process: DDP gathers
            if outputs.anomaly_map is not None and kept < limit:
                maps = outputs.anomaly_map.detach().float().cpu()
                maps = maps.reshape(len(normal), *maps.shape[-2:])[normal]
                self._maps.append(maps[: limit - kept])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """anomalib's thresholds and min/max, then the defect-free thresholds replace the F1-adaptive ones."""
        super().on_validation_epoch_end(trainer, pl_module)
        self._scores, self._maps = from_all_processes(self._scores), from_all_processes(self._maps)
        if not self._scores:
            logger.warning(
                "DefectFreePostProcessor: the validation set has no defect-free image, so the thresholds stay "
                "anomalib's F1-adaptive ones. Add defect-free images to the validation split.",
            )
            return
        scores = torch.cat(self._scores).numpy()
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            logger.warning(
                "DefectFreePostProcessor: all defect-free validation scores are NaN or infinite; "
                "thresholds left unchanged"
            )
            return
        if len(scores) < MIN_CALIBRATION_IMAGES:
            raise ValueError(too_few_images(len(scores)))
        if len(scores) * self.image_fpr < 1:
            logger.warning(
                "DefectFreePostProcessor: %d defect-free validation images cannot resolve image_fpr=%g (the smallest "
                "rate they can is about %.2g), so the image threshold is their highest score.",
                len(scores),
                self.image_fpr,
                1 / len(scores),
            )
        rates = torch.cat([FPR_GRID, torch.tensor([self.image_fpr, self.pixel_fpr], dtype=torch.float64)])
        image = fpr_quantiles(scores, rates)
        self.image_fpr_quantiles.copy_(image[:-2])
        self._image_threshold.fill_(float(image[-2]))
        self.calibration_images.fill_(len(scores))
        if self._maps:
            maps = torch.cat(self._maps)[: self.max_calibration_images].numpy()
            pixels = fpr_quantiles(maps[np.isfinite(maps)], rates)  # one sort for the table and the threshold
            self.pixel_fpr_quantiles.copy_(pixels[:-2])
            self._pixel_threshold.fill_(float(pixels[-1]))
            if self.min_defect_area is not None:
                threshold = min_area_threshold(maps, self.min_defect_area, float(self._pixel_threshold))
                self._pixel_threshold.fill_(threshold)
        self.observed_range.copy_(torch.stack([self.image_min, self.image_max, self.pixel_min, self.pixel_max]))
        self._centre_ranges()
        self._scores, self._maps = [], []

    def _centre_ranges(self) -> None:
        """Make each normalisation range symmetric about its threshold and wide enough to hold every validation
        value: anomalib clamps normalised outputs to [0, 1], i.e. to ``threshold +- (max - min) / 2``, and only
        thresholds inside that band can be chosen after export (``anomalib_ssimae.calibration.normalized_cut``)."""
        observed = self.observed_range.to(self.image_min.dtype)
        for level, threshold, low, high, seen_low, seen_high in (
            ("image", self._image_threshold, self.image_min, self.image_max, observed[0], observed[1]),
            ("pixel", self._pixel_threshold, self.pixel_min, self.pixel_max, observed[2], observed[3]),
        ):
            if torch.isnan(threshold) or torch.isnan(seen_low) or torch.isnan(seen_high):
                continue
            half = torch.maximum(seen_high - threshold, threshold - seen_low)
            if not half > 0:  # every validation value equals the threshold: anomalib would divide by zero
                half = threshold.abs() if threshold != 0 else torch.ones_like(threshold)
                logger.warning(
                    "DefectFreePostProcessor: every %s validation value equals the threshold %.6g, so the %s "
                    "normalisation range is set to threshold +- |threshold| (0 -> 0, threshold -> 0.5, "
                    "2 x threshold -> 1)",
                    level,
                    float(threshold),
                    level,
                )
            low.copy_(threshold - half)
            high.copy_(threshold + half)

    def set_false_positive_rates(self, image_fpr: float | None = None, pixel_fpr: float | None = None) -> None:
        """Move the thresholds to other false-positive rates, from the stored defect-free quantiles (no retraining).

        The rate is interpolated in log scale on :data:`FPR_GRID` (1 down to 1e-6; smaller rates raise
        ``ValueError``); rates below what the validation images can resolve (about 1 / number of defect-free scores
        or pixels) give their maximum.
        ``min_defect_area`` is not re-applied: call it before exporting, then re-export.
        """
        for name, fpr in (("image_fpr", image_fpr), ("pixel_fpr", pixel_fpr)):
            if fpr is not None:
                check_fpr(name, fpr)
        for fpr, table, threshold in (
            (image_fpr, self.image_fpr_quantiles, self._image_threshold),
            (pixel_fpr, self.pixel_fpr_quantiles, self._pixel_threshold),
        ):
            if fpr is None or torch.isnan(table).all():
                continue
            threshold.fill_(interpolate_fpr(table.detach().cpu(), fpr))
        if image_fpr is not None:
            self.image_fpr = image_fpr
        if pixel_fpr is not None:
            self.pixel_fpr = pixel_fpr
        self._centre_ranges()
