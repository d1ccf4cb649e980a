"""The pixel "ROC AUC" of Rádli & Czúni (2021), as an anomalib metric.

Rádli & Czúni ("About the Application of Autoencoders for Visual Defect Detection", WSCG 2021, §4) report an
AUC that is not the pooled pixel AUROC of anomalib. The authors' code (``src/test.py`` of
``richardRadli/autoencoders_for_visual_defect_detection``, ``get_results`` and ``plot_average_roc``) computes it as:

1. 50 thresholds ``np.arange(0.01, 1.01, 1.01 / 50)`` (0.01, 0.0302, ..., 0.9998);
2. per threshold and test image, the binary mask ``residual > t`` is opened with ``skimage.morphology.disk(4)``
   and compared with the ground truth: FPR = FP / (FP + TN), TPR = TP / (TP + FN);
3. per threshold, FPR and TPR are averaged over the images (macro average);
4. AUC = trapezoid rule (``np.trapz``) over the 50 (FPR, TPR) points sorted by FPR, without the (0, 0) and (1, 1)
   end points.

The paper evaluated only the defective test images. :class:`PaperProtocolAUROC` reproduces this protocol streaming,
keeping 2 x 50 sums and an image count, so no maps are stored and the states add up across processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from anomalib.metrics import AnomalibMetric, Evaluator
from anomalib.metrics.utils import plot_metric_curve
from kornia.morphology import opening
from matplotlib.figure import Figure
from torchmetrics import Metric

from anomalib_ssimae.components.distributed import from_all_processes

PAPER_THRESHOLDS = torch.from_numpy(np.arange(0.01, 1.01, 1.01 / 50))
"""The authors' 50 thresholds, float64: 0.01 + k * 0.0202 for k = 0 ... 49, exactly as numpy's ``arange`` makes
them (the last is 0.9997999999999998)."""


def disk(radius: int) -> torch.Tensor:
    """Flat disk footprint, ``(2 * radius + 1, 2 * radius + 1)`` bool, true where ``y**2 + x**2 <= radius**2``.

    The same footprint as ``skimage.morphology.disk(radius)`` (e.g. 49 of the 81 cells for radius 4).

    Example:
        >>> disk(1).int()
        tensor([[0, 1, 0],
                [1, 1, 1],
                [0, 1, 0]], dtype=torch.int32)
        >>> int(disk(4).sum())
        49
    """
    offsets = torch.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


class _PaperProtocolAUROC(Metric):
    """Macro-averaged, thresholded ROC AUC of Rádli & Czúni (2021) over defective images (see the module docstring).

    Only images whose ground-truth mask has at least one positive (non-zero) pixel count, as the paper used only the
    defective test images; images with an empty mask are skipped (they add nothing to the sums or the count). An
    image without negative pixels (mask all positive) has FPR 0.

    The maps must be on the scale the thresholds were chosen for: the paper's residual, 1 - SSIM, which is in
    [0, 1] for all but anti-correlated windows (the package's ``residual="ssim"`` map). A map on another scale
    (``"ssim_l2"``, a position-normalised map, a min-max-normalised map) gives a different, not comparable, value.
    The authors' map also differs from the package's in ways that belong to the map, not to this metric: uniform
    11 x 11 SSIM window on uint8 images, and the residual multiplied by 0.2 in a 5-pixel border before thresholding.

    Args:
        thresholds: the thresholds, 1-D, in the map's units; default :data:`PAPER_THRESHOLDS`. Stored as float64,
            and the maps are compared with them in float64 (the authors' residual is a float64 numpy array).
        opening_radius: radius in pixels of the disk the binary masks are opened with (4 in the paper; 0 = no
            opening). The opening ignores the pixels outside the image (kornia ``border_type="geodesic"``), as
            ``skimage.morphology.opening`` with its default ``mode="reflect"`` does for a disk: a defect touching
            the image border is not eroded from outside.
        max_elements: at most this many ``images x thresholds x H x W`` binary pixels are compared with the masks
            at once (thresholds are processed in chunks; at least one threshold per chunk). About 3 bytes each.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(anomaly_map, gt_mask)``: ``(B, 1, H, W)`` or ``(B, H, W)`` float maps, and masks of the same shape
    (bool, or numbers with non-zero = defective pixel).

    ``compute()``: the AUC, a float32 scalar tensor in [0, 1]. Note that it is not a standard AUROC: with no end
    points, a curve whose 50 points all lie at FPR 0 (e.g. a map equal to the mask) has area 0. If no defective
    image was seen it warns and returns NaN (torchmetrics' AUROC also warns and returns a number when the targets
    have no positives, rather than raising; NaN here, since no value is defined).

    Raises:
        ValueError: for empty, non-1-D or non-finite ``thresholds``, a negative ``opening_radius``, ``max_elements``
            below 1, and (in ``update``) maps and masks of other shapes.
    """

    is_differentiable: bool = False
    higher_is_better: bool | None = True
    full_state_update: bool = False
    fpr_sum: torch.Tensor
    tpr_sum: torch.Tensor
    num_images: torch.Tensor

    def __init__(
        self,
        thresholds: Sequence[float] | torch.Tensor | None = None,
        opening_radius: int = 4,
        max_elements: int = 2**24,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        values = PAPER_THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)
        values = values.detach().to(device="cpu", dtype=torch.float64).clone()
        if values.ndim != 1 or values.numel() == 0 or not torch.isfinite(values).all():
            msg = f"thresholds must be a non-empty 1-D sequence of finite numbers, got {values}"
            raise ValueError(msg)
        if opening_radius < 0:
            msg = f"opening_radius must be >= 0, got {opening_radius}"
            raise ValueError(msg)
        if max_elements < 1:
            msg = f"max_elements must be >= 1, got {max_elements}"
            raise ValueError(msg)
        self.opening_radius = int(opening_radius)
        self.max_elements = int(max_elements)
        self.register_buffer("thresholds", values, persistent=False)
        self.register_buffer("footprint", disk(self.opening_radius).float(), persistent=False)
        num = values.numel()
        self.add_state("fpr_sum", default=torch.zeros(num, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tpr_sum", default=torch.zeros(num, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @staticmethod
    def _as_images(anomaly_map: torch.Tensor, gt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` or ``(B, H, W)`` maps and masks -> ``(B, H, W)`` float64 maps and bool masks."""
        maps = anomaly_map.squeeze(1) if anomaly_map.ndim == 4 and anomaly_map.shape[1] == 1 else anomaly_map
        masks = gt_mask.squeeze(1) if gt_mask.ndim == 4 and gt_mask.shape[1] == 1 else gt_mask
        if maps.ndim != 3 or maps.shape != masks.shape:
            msg = (
                "anomaly_map and gt_mask must both be (B, 1, H, W) or (B, H, W) with the same B, H, W, got "
                f"{tuple(anomaly_map.shape)} and {tuple(gt_mask.shape)}"
            )
            raise ValueError(msg)
        return maps.detach().to(torch.float64), masks.detach() != 0

    def _open(self, maps: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` float64 maps -> the maps opened by the disk (flat grayscale opening, outside ignored).

        Flat morphology commutes with thresholding: ``opening(map) > t`` is ``opening(map > t)`` at every ``t``
        (the minimum over a window exceeds ``t`` exactly when every pixel does, and the maximum when any does). So
        one grayscale opening stands for the authors' 50 binary ones, with the same masks (tested against their
        numpy/skimage code); the 50 openings took about 1 s per 384 x 384 image on 2 cores, more than the network.
        """
        if self.opening_radius == 0:
            return maps
        footprint = self.footprint.to(maps.device)
        return opening(maps[:, None], footprint, border_type="geodesic", engine="shift")[:, 0]

    @torch.no_grad()
    def update(self, anomaly_map: torch.Tensor, gt_mask: torch.Tensor) -> None:
        """Add the per-image FPR and TPR of the batch's defective images at every threshold (see the class)."""
        maps, masks = self._as_images(anomaly_map, gt_mask)
        defective = masks.flatten(1).any(dim=1)
        if not defective.any():
            return
        maps, masks = maps[defective], masks[defective]
        num, height, width = maps.shape
        positives = masks.sum(dim=(1, 2)).to(torch.float64)  # > 0 for every image kept
        negatives = height * width - positives
        thresholds = self.thresholds.to(maps.device)
        opened = self._open(maps)
        step = max(1, self.max_elements // (num * height * width))
        for start in range(0, thresholds.numel(), step):
            predicted = opened[:, None] > thresholds[None, start : start + step, None, None]  # (N, T, H, W)
            true_pos = (predicted & masks[:, None]).sum(dim=(2, 3)).to(torch.float64)
            false_pos = predicted.sum(dim=(2, 3)).to(torch.float64) - true_pos
            tpr = true_pos / positives[:, None]
            fpr = torch.where(negatives[:, None] > 0, false_pos / negatives[:, None].clamp_min(1), 0.0)
            # the sums stay where the metric is (a metric outside the Evaluator may sit on the CPU, maps on a GPU)
            self.fpr_sum[start : start + step] += fpr.sum(dim=0).to(self.fpr_sum.device)
            self.tpr_sum[start : start + step] += tpr.sum(dim=0).to(self.tpr_sum.device)
        self.num_images += num

    def _curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean FPR and TPR per threshold, sorted by FPR (ties by TPR); NaN with a warning if no image was seen."""
        if int(self.num_images) == 0:
            warnings.warn(
                "PaperProtocolAUROC saw no defective image (no gt_mask with a positive pixel): the protocol "
                "evaluates defective images only; returning NaN.",
                UserWarning,
                stacklevel=3,
            )
        fpr = self.fpr_sum / self.num_images
        tpr = self.tpr_sum / self.num_images
        # Sort by FPR, ties by TPR: the ROC order, as both rates fall with the threshold. The authors' np.argsort
        # leaves the order of tied FPRs to numpy's unstable sort, which changes the area when tied points differ
        # in TPR (e.g. several thresholds at FPR 0).
        order = torch.argsort(tpr, stable=True)
        order = order[torch.argsort(fpr[order], stable=True)]
        return fpr[order], tpr[order]

    def curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The protocol's ROC points: ``(fpr, tpr)``, each ``(T,)`` float64 in [0, 1], sorted by FPR (ties by TPR).

        Synchronised across processes like ``compute``. NaN, with a warning, if no defective image was seen.
        """
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self._curve()

    def compute(self) -> torch.Tensor:
        """The AUC: trapezoid rule over :meth:`curve`'s points, no end points added (float32 scalar; NaN if none)."""
        fpr, tpr = self._curve()
        return torch.trapezoid(tpr, fpr).to(torch.float32)

    def generate_figure(self) -> tuple[Figure, str]:
        """The protocol's ROC curve and its AUC, for anomalib's metric visualisation: ``(figure, title)``."""
        fpr, tpr = self.curve()
        area = torch.trapezoid(tpr, fpr)
        fig, _ = plot_metric_curve(
            fpr,
            tpr,
            area,
            (0.0, 1.0),
            (0.0, 1.0),
            "Mean per-image FPR",
            "Mean per-image TPR",
            "lower right",
            "Paper-protocol ROC",
            metric_name="AUC",
        )
        return fig, "Paper-protocol ROC"


class PaperProtocolAUROC(AnomalibMetric, _PaperProtocolAUROC):  # type: ignore[misc]
    """The Rádli & Czúni (2021) pixel "ROC AUC" for anomalib's ``Evaluator`` (see :class:`_PaperProtocolAUROC`).

    Args:
        fields: batch fields ``[anomaly map, ground-truth mask]``, usually ``["anomaly_map", "gt_mask"]``.
        prefix: prefix of the logged name (e.g. ``"pixel_"`` -> ``pixel_PaperProtocolAUROC``).
        thresholds, opening_radius, max_elements: see :class:`_PaperProtocolAUROC`.

    The anomaly maps must be the 1 - SSIM residual (thresholds in [0.01, 1]), not min-max normalised maps.

    Example:
        A 20 x 20 square defect with residual 0.6 on a background of 0.1. For the 5 thresholds below 0.1 every
        pixel is positive (FPR 1, TPR 1); for the 25 in [0.1, 0.6) the square is, but the opening by the disk
        rounds its corners off (8 pixels each), so TPR = 368 / 400 = 0.92 at FPR 0; for the 20 above, nothing
        (FPR 0, TPR 0). The area under (0, 0) ... (0, 0.92) ... (1, 1) is (0.92 + 1) / 2 = 0.96.

        >>> from anomalib.data import ImageBatch
        >>> gt_mask = torch.zeros(1, 64, 64, dtype=torch.bool)
        >>> gt_mask[:, 20:40, 20:40] = True
        >>> anomaly_map = torch.full((1, 1, 64, 64), 0.1)
        >>> anomaly_map[..., 20:40, 20:40] = 0.6
        >>> batch = ImageBatch(image=torch.rand(1, 3, 64, 64), anomaly_map=anomaly_map, gt_mask=gt_mask)
        >>> metric = PaperProtocolAUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_")
        >>> metric.update(batch)
        >>> metric.compute()
        tensor(0.9600)
        >>> fpr, tpr = metric.curve()
        >>> int((fpr == 1).sum()), int(((fpr == 0) & (tpr == 0.92)).sum()), int((tpr == 0).sum())
        (5, 25, 20)
    """


class CheckedEvaluator(Evaluator):
    """anomalib's ``Evaluator`` that reports a test metric as NaN, with a warning saying why, when the test set
    cannot define it, instead of the number anomalib prints (0.0 or 0.5, which look like results).

    The target of a metric is its last field (``gt_label`` or ``gt_mask``). Over the whole test set, a ranking
    metric (AUROC, AUPRO, ...) needs both classes: defective and defect-free images (image metrics), defect and
    defect-free pixels (pixel metrics); an F1 metric needs defects (it is defined on defective images alone). So a
    test set with only defect-free images, or without ``ground_truth`` masks, gives NaN pixel metrics, and one with
    only defective images NaN image AUROC. Same arguments as ``Evaluator``; :class:`PaperProtocolAUROC` uses only
    defective images and is left to its own check.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[str, set[bool]] = {}

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Forget the classes seen in an earlier test."""
        del trainer, pl_module
        self._seen = {}

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any, **kw: Any) -> None:
        """anomalib's metric updates (from ``batch``), plus the classes present in each target field."""
        super().on_test_batch_end(trainer, pl_module, outputs, batch, *args, **kw)
        for field in ("gt_label", "gt_mask"):
            target = getattr(batch, field, None)
            if target is not None:
                self._seen.setdefault(field, set()).update(torch.unique(target.bool()).tolist())

    def _undefined(self, metric: Any, seen: dict[str, set[bool]]) -> str | None:
        """Why ``metric`` cannot be computed on the test set, or ``None``."""
        field = metric.fields[-1] if getattr(metric, "fields", None) else None
        if isinstance(metric, PaperProtocolAUROC) or field not in {"gt_label", "gt_mask"}:
            return None
        classes = seen.get(field, set())
        what = "images" if field == "gt_label" else "pixels"
        if True not in classes:
            return f"no defective {what}{' (no ground-truth masks?)' if field == 'gt_mask' else ''}"
        if False not in classes and "F1" not in type(metric).__name__:
            return f"no defect-free {what}"
        return None

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log each metric, or NaN with a warning when the test set cannot define it."""
        del pl_module
        parts = from_all_processes([self._seen])  # each process tested its share of the images
        seen = {field: set().union(*(part.get(field, set()) for part in parts)) for field in ("gt_label", "gt_mask")}
        for metric in self.test_metrics:
            reason = self._undefined(metric, seen)
            if reason is None:
                self.log(metric.name, metric)
                value = metric.compute() if trainer.barebones else None
            else:
                warnings.warn(
                    f"{metric.name} cannot be computed: the test set has {reason}; logged as NaN", stacklevel=1
                )
                self.log(metric.name, float("nan"))
                value = torch.tensor(float("nan"))
                metric.reset()
            if trainer.barebones:  # self.log does nothing there (as anomalib's Evaluator does)
                trainer.callback_metrics[metric.name] = trainer.logged_metrics[metric.name] = value
