"""Thresholds from defect-free images (DefectFreePostProcessor) on precisely constructed scores and maps, and the
warning for F1-adaptive thresholds without defective validation images on a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch, MVTecAD
from anomalib.engine import Engine

from anomalib_ssimae import SsimAe
from anomalib_ssimae.post_processing import (
    FPR_GRID,
    DefectFreePostProcessor,
    fpr_quantiles,
    interpolate_fpr,
    largest_region,
    min_area_threshold,
)

from .helpers import DATASETS


def test_fpr_quantiles_leave_the_target_fraction_above() -> None:
    scores = np.arange(1.0, 101.0)  # 1 ... 100
    assert fpr_quantiles(scores, torch.tensor([0.05, 0.01, 0.0, 1.0, 0.5], dtype=torch.float64)).tolist() == [
        95.0,
        99.0,
        100.0,
        1.0,
        50.0,
    ]
    assert (
        FPR_GRID[0] == 1 and FPR_GRID[20].item() == pytest.approx(0.01) and FPR_GRID[-1].item() == pytest.approx(1e-6)
    )
    table = fpr_quantiles(scores)
    assert interpolate_fpr(table, 0.01) == pytest.approx(99.0)
    assert interpolate_fpr(table, 1e-6) == 100.0  # the end of the grid: the maximum
    for below in (1e-9, 0.0):  # below the stored range: refused, not silently replaced by 1e-6 (issue 10)
        with pytest.raises(ValueError, match=r"\[1e-06, 1\].*got " + f"{below:g}"):
            interpolate_fpr(table, below)


def test_min_defect_area_rule() -> None:
    maps = np.zeros((2, 10, 10))
    maps[0, 2:5, 2:5] = np.arange(1, 10).reshape(3, 3)  # a 3 x 3 blob with values 1..9
    maps[1, 0, 0] = 5.0
    assert largest_region(maps, 0.0) == 9
    assert largest_region(maps, 5.5) == 4  # 6, 7, 8, 9
    # regions of 4 or more pixels exist up to t < 6; at t = 6 only 7, 8, 9 remain
    assert min_area_threshold(maps, 4, start=0.0) == pytest.approx(6.0, abs=1e-6)
    assert min_area_threshold(maps, 4, start=7.0) == 7.0  # already satisfied


def _batch(scores: list[float], labels: list[bool], maps: torch.Tensor) -> ImageBatch:
    n = len(scores)
    return ImageBatch(
        image=torch.zeros(n, 3, *maps.shape[-2:]),
        gt_label=torch.tensor(labels),
        pred_score=torch.tensor(scores),
        anomaly_map=maps,
    )


def test_thresholds_come_from_defect_free_images_only() -> None:
    post = DefectFreePostProcessor(image_fpr=0.25, pixel_fpr=0.5)
    normal_maps = torch.arange(4 * 16, dtype=torch.float32).reshape(4, 1, 4, 4) / 64  # 0 ... 63/64
    defect_maps = torch.full((2, 1, 4, 4), 5.0)
    post.on_validation_epoch_start(None, None)
    post.on_validation_batch_end(
        None,
        None,
        _batch(
            [0.1, 0.2, 9.0, 0.3],
            [False, False, True, False],
            torch.cat([normal_maps[:2], defect_maps[:1], normal_maps[2:3]]),
        ),
    )
    post.on_validation_batch_end(
        None, None, _batch([0.4, 8.0], [False, True], torch.cat([normal_maps[3:], defect_maps[1:]]))
    )
    post.on_validation_epoch_end(None, None)
    assert int(post.calibration_images) == 4
    assert float(post.image_threshold) == pytest.approx(0.3)  # one of four normal scores (0.4) above
    assert float(post.pixel_threshold) == pytest.approx(31 / 64)  # half of the 64 normal pixels above
    # ranges centred on the thresholds and holding every validation value (defective ones too)
    assert float(post.image_min) <= 0.1 and float(post.image_max) >= 9.0
    assert float(post.image_max + post.image_min) / 2 == pytest.approx(0.3)
    assert float(post.pixel_max + post.pixel_min) / 2 == pytest.approx(31 / 64)
    # normalised: the threshold maps to 0.5, labels follow the raw threshold
    out = post.forward(
        ImageBatch(
            image=torch.zeros(2, 3, 4, 4),
            pred_score=torch.tensor([0.3, 0.31]),
            anomaly_map=torch.full((2, 1, 4, 4), 31 / 64),
        )
    )
    assert out.pred_score[0].item() == pytest.approx(0.5)
    assert out.pred_label.tolist() == [False, True]
    # another operating point later, from the stored quantiles
    post.set_false_positive_rates(image_fpr=1e-6)
    assert float(post.image_threshold) == pytest.approx(0.4)
    assert float(post.image_max + post.image_min) / 2 == pytest.approx(0.4)
    assert float(post.image_max - post.image_min) == pytest.approx(2 * (9.0 - 0.4))  # from the observed 0.1 .. 9.0
    post.set_false_positive_rates(image_fpr=1e-6)  # repeating it does not widen the range
    assert float(post.image_max - post.image_min) == pytest.approx(2 * (9.0 - 0.4))


def test_invalid_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="image_fpr"):
        DefectFreePostProcessor(image_fpr=1.5)
    # below the stored quantiles' range (FPR_GRID ends at 1e-6): refused by name (issue 10), at init and later
    with pytest.raises(ValueError, match=r"pixel_fpr .* \[1e-06, 1\), got 1e-07: .* stored down to 1e-06"):
        DefectFreePostProcessor(pixel_fpr=1e-7)
    post = DefectFreePostProcessor()
    with pytest.raises(ValueError, match=r"image_fpr .* got 1e-09"):
        post.set_false_positive_rates(image_fpr=1e-9)
    assert post.image_fpr == 0.01  # unchanged
    DefectFreePostProcessor(image_fpr=1e-6, pixel_fpr=1e-6)  # the end of the range is allowed
    with pytest.raises(ValueError, match="min_defect_area"):
        DefectFreePostProcessor(min_defect_area=0)
    with pytest.raises(ValueError, match="enable_normalization"):
        DefectFreePostProcessor(enable_normalization=False)


def _fit(post: DefectFreePostProcessor, scores: list[float], maps: torch.Tensor) -> DefectFreePostProcessor:
    """One validation epoch of defect-free images only."""
    post.on_validation_epoch_start(None, None)
    post.on_validation_batch_end(None, None, _batch(scores, [False] * len(scores), maps))
    post.on_validation_epoch_end(None, None)
    return post


def test_one_defect_free_validation_image_is_refused() -> None:
    """Issue 10: one defect-free validation image gave the threshold its own score and an empty normalisation range
    (normalised scores exactly 0 or 1; similar defect-free images called anomalous). Now refused, naming the split."""
    maps = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"has 1 defect-free image; at least 2 .*val_split_ratio"):
        _fit(DefectFreePostProcessor(), [0.7], maps)
    # at fit start already, from the datamodule's validation split (before any training)
    import pandas as pd

    trainer = type("T", (), {})()
    trainer.datamodule = type("D", (), {})()
    trainer.datamodule.val_data = type("S", (), {"samples": pd.DataFrame({"label_index": [0, 1, 1]})})()
    with pytest.raises(ValueError, match="has 1 defect-free image"):
        DefectFreePostProcessor().on_fit_start(trainer, None)
    trainer.datamodule.val_data.samples = pd.DataFrame({"label_index": [0, 0, 1]})
    DefectFreePostProcessor().on_fit_start(trainer, None)  # two: accepted


def test_identical_validation_scores_use_the_documented_range() -> None:
    """Two defect-free validation images with the same score (and no defective one): the observed range is empty,
    so the image range falls back to threshold +- |threshold|: normalised = 0.5 + (x - t) / (2 |t|)."""
    maps = torch.linspace(0, 1, 2 * 64).reshape(2, 1, 8, 8)
    post = _fit(DefectFreePostProcessor(image_fpr=0.5), [0.7, 0.7], maps)
    assert float(post.image_threshold) == pytest.approx(0.7)
    assert (float(post.image_min), float(post.image_max)) == pytest.approx((0.0, 1.4))
    out = post.forward(
        ImageBatch(
            image=torch.zeros(4, 3, 8, 8),
            pred_score=torch.tensor([0.0, 0.7, 0.875, 1.4]),
            anomaly_map=maps[:1].expand(4, -1, -1, -1),
        )
    )
    assert out.pred_score.tolist() == pytest.approx([0.0, 0.5, 0.625, 1.0])
    assert out.pred_label.tolist() == [False, False, True, True]
    # the pixel range was not empty: centred on its threshold as before, holding every validation pixel
    assert float(post.pixel_max + post.pixel_min) / 2 == pytest.approx(float(post.pixel_threshold))
    assert float(post.pixel_min) <= 0.0 and float(post.pixel_max) >= 1.0


@pytest.mark.slow
def test_warning_when_f1_thresholds_have_no_defective_validation_images(tmp_path: object) -> None:
    datamodule = MVTecAD(
        root=DATASETS,
        category="bsdata_pitting_mini",
        val_split_mode="from_train",
        val_split_ratio=0.2,
        seed=42,
        num_workers=0,
    )
    engine = Engine(
        max_epochs=1, default_root_dir=tmp_path, logger=False, accelerator="auto", devices=1, enable_progress_bar=False
    )
    with pytest.warns(UserWarning, match="F1-adaptive"):
        engine.fit(SsimAe(crops_per_epoch=64, batch_size=64), datamodule=datamodule)
    calibrated = SsimAe(crops_per_epoch=64, batch_size=64, post_processor=DefectFreePostProcessor())
    Engine(
        max_epochs=1, default_root_dir=tmp_path, logger=False, accelerator="auto", devices=1, enable_progress_bar=False
    ).fit(calibrated, datamodule=datamodule)
    # every validation image is defect-free: 20 % of the 40 training images (anomalib floors 40 x 0.2 = 8)
    assert int(calibrated.post_processor.calibration_images) == 8
