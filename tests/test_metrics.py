"""PaperProtocolAUROC (the Rádli & Czúni 2021 "ROC AUC") on maps whose curves are worked out by hand, and against a
transcription of the authors' numpy/skimage code."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import kornia
import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.metrics import Evaluator

from anomalib_ssimae.metrics import PAPER_THRESHOLDS, PaperProtocolAUROC, _PaperProtocolAUROC, disk

SIZE = 64  # 4096 pixels


def square_mask(top: int = 20, left: int = 20, side: int = 20, size: int = SIZE) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[:, top : top + side, left : left + side] = True
    return mask


def per_threshold(metric: _PaperProtocolAUROC) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean FPR and TPR in threshold order (unsorted)."""
    return metric.fpr_sum / metric.num_images, metric.tpr_sum / metric.num_images


def test_thresholds_and_footprint_are_the_authors() -> None:
    assert PAPER_THRESHOLDS.dtype == torch.float64
    assert PAPER_THRESHOLDS.numel() == 50
    assert PAPER_THRESHOLDS[:3].tolist() == pytest.approx([0.01, 0.0302, 0.0504], abs=1e-15)
    assert PAPER_THRESHOLDS[1].item() == 0.030199999999999998  # numpy's 0.01 + 1 * 0.0202, not the literal 0.0302
    assert PAPER_THRESHOLDS[-1].item() == 0.9997999999999998
    assert (PAPER_THRESHOLDS.numpy() == np.arange(0.01, 1.01, 1.01 / 50)).all()
    assert int((PAPER_THRESHOLDS < 0.5).sum()) == 25  # 0.4948 is the last below 0.5
    footprint = disk(4)
    assert footprint.shape == (9, 9)
    assert footprint.sum(dim=1).tolist() == [1, 5, 7, 7, 9, 7, 7, 5, 1]  # 49 cells


def test_perfect_map_has_area_zero() -> None:
    """A map equal to the mask: every threshold (all < 1) gives the mask itself, at FPR 0. The opening rounds the
    square's 4 corners off (8 pixels each: rows of 4, 2, 1, 1), so TPR = 368 / 400 = 0.92 (1 without opening). All
    50 points lie at FPR 0 and no end points are added, so the area is 0."""
    mask = square_mask()
    for radius, tpr_expected in ((4, 0.92), (0, 1.0)):
        metric = _PaperProtocolAUROC(opening_radius=radius)
        metric.update(mask.float().unsqueeze(1), mask)
        fpr, tpr = metric.curve()
        assert (fpr == 0).all()
        assert (tpr == tpr_expected).all()
        assert metric.compute().item() == 0.0


def test_constant_map_gives_one_half() -> None:
    """A constant map of 0.5: the 25 thresholds below 0.5 mark every pixel (FPR 1, TPR 1; the opening keeps the full
    image, which it would not if the outside counted as background), the 25 others none (FPR 0, TPR 0). The
    trapezoid from (0, 0) to (1, 1) has area 0.5."""
    metric = _PaperProtocolAUROC()
    metric.update(torch.full((1, 1, SIZE, SIZE), 0.5), square_mask())
    fpr, tpr = per_threshold(metric)
    assert fpr[:25].tolist() == [1.0] * 25 and tpr[:25].tolist() == [1.0] * 25
    assert fpr[25:].tolist() == [0.0] * 25 and tpr[25:].tolist() == [0.0] * 25
    assert metric.compute().item() == 0.5


def test_opening_ignores_the_outside_of_the_image() -> None:
    """A square in the image corner: its 3 corners on the border stay (geodesic border: the outside is neither
    defect nor background), only the inner one is rounded, so TPR = (400 - 8) / 400 = 0.98. Padding with background
    (kornia's ``border_type="constant"``, 0) would round all 4 (0.92); skimage keeps the 3 as the metric does."""
    mask = square_mask(top=0, left=0)
    metric = _PaperProtocolAUROC(thresholds=[0.5])
    metric.update(mask.float(), mask)
    assert metric.curve()[1].tolist() == [0.98]
    padded = kornia.morphology.opening(mask[None].float(), disk(4).float(), border_type="constant", border_value=0.0)
    assert int(padded.sum()) == 368
    morphology = pytest.importorskip("skimage.morphology")
    assert int(morphology.opening(mask[0].numpy().astype(np.uint8), morphology.disk(4)).sum()) == 392


def test_opening_removes_a_blob_smaller_than_the_disk() -> None:
    """Square (defect, 400 px) and a 3 x 3 false-positive blob at 0.8 on a background of 0: the 40 thresholds below
    0.8 mark both. The opening removes the blob (FPR 0, TPR 0.92); without it FPR = 9 / 3696 at TPR 1, and the
    area from (0, 0) to that point is 0.5 * 9 / 3696."""
    mask = square_mask()
    anomaly_map = mask.float() * 0.8
    anomaly_map[:, 50:53, 5:8] = 0.8
    below = int((PAPER_THRESHOLDS < 0.8).sum())
    assert below == 40
    opened = _PaperProtocolAUROC()
    opened.update(anomaly_map, mask)
    fpr, tpr = per_threshold(opened)
    assert (fpr == 0).all()
    assert tpr[:below].tolist() == [0.92] * below and (tpr[below:] == 0).all()
    plain = _PaperProtocolAUROC(opening_radius=0)
    plain.update(anomaly_map, mask)
    fpr, tpr = per_threshold(plain)
    assert fpr[:below].tolist() == [9 / 3696] * below and tpr[:below].tolist() == [1.0] * below
    assert plain.compute().item() == pytest.approx(0.5 * 9 / 3696, rel=1e-6)


def test_rates_are_averaged_over_images() -> None:
    """Image A: 100 defect pixels, half found, no false positive (TPR 0.5, FPR 0). Image B: 300 defect pixels, all
    found, 181 of its 724 background pixels marked (TPR 1, FPR 0.25). Macro: TPR 0.75, FPR 0.125 (pooled would be
    350 / 400 and 181 / 1648)."""
    size = 32
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, :10, :10] = True  # 100
    masks[1, :10, :30] = True  # 300
    maps = torch.zeros(2, size, size)
    maps[0, :5, :10] = 0.9  # 50 of A's defect
    maps[1, :10, :30] = 0.9
    maps[1].view(-1)[size * size - 181 :] = 0.9  # 181 background pixels of B (rows 26-31, last 181 pixels)
    metric = _PaperProtocolAUROC(thresholds=[0.5], opening_radius=0)
    metric.update(maps, masks)
    fpr, tpr = metric.curve()
    assert fpr.tolist() == [0.125] and tpr.tolist() == [0.75]
    assert metric.compute().item() == 0.0  # one point: no area


def test_images_without_defect_are_skipped() -> None:
    mask = square_mask()
    anomaly_map = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    alone = _PaperProtocolAUROC()
    alone.update(anomaly_map, mask)
    mixed = _PaperProtocolAUROC()
    mixed.update(
        torch.cat([anomaly_map, torch.ones(1, 1, SIZE, SIZE)]), torch.cat([mask, torch.zeros_like(mask)])
    )  # the defect-free image would add FPR 1 at every threshold
    assert int(mixed.num_images) == 1
    assert torch.equal(mixed.fpr_sum, alone.fpr_sum) and torch.equal(mixed.tpr_sum, alone.tpr_sum)

    empty = _PaperProtocolAUROC()
    empty.update(torch.ones(2, 1, SIZE, SIZE), torch.zeros(2, 1, SIZE, SIZE, dtype=torch.bool))
    with pytest.warns(UserWarning, match="no defective image"):
        assert torch.isnan(empty.compute())


def test_ties_in_fpr_are_ordered_by_tpr() -> None:
    """Thresholds 0.2, 0.5, 0.8 give (f, 1), (0, 1), (0, 0.5) with f = 9 / 3696 (a blob at 0.3, half the square at
    0.6). In ROC order (0, 0.5), (0, 1), (f, 1) the area is f; the other order of the tie would give 0.75 f."""
    mask = square_mask()
    anomaly_map = mask.float() * 0.9
    anomaly_map[:, 20:30, 20:40] = 0.6
    anomaly_map[:, 50:53, 5:8] = 0.3
    metric = _PaperProtocolAUROC(thresholds=[0.2, 0.5, 0.8], opening_radius=0)
    metric.update(anomaly_map, mask)
    fpr, tpr = metric.curve()
    assert fpr.tolist() == [0.0, 0.0, 9 / 3696] and tpr.tolist() == [0.5, 1.0, 1.0]
    assert metric.compute().item() == pytest.approx(9 / 3696, rel=1e-6)


def random_batch(num: int = 4, size: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise in [0, 0.5) with rectangular defects of 0.3-1.0, one touching the image border."""
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(num, 1, size, size, generator=generator, dtype=torch.float64) * 0.5
    masks = torch.zeros(num, size, size, dtype=torch.bool)
    for i in range(num):
        top, left = (0, 0) if i == 0 else torch.randint(0, size - 14, (2,), generator=generator).tolist()
        height, width = torch.randint(6, 14, (2,), generator=generator).tolist()
        masks[i, top : top + height, left : left + width] = True
        maps[i, 0, top : top + height, left : left + width] += 0.3 + 0.2 * torch.rand(
            height, width, generator=generator
        )
    return maps, masks


def test_streaming_and_chunking_give_the_same_state() -> None:
    maps, masks = random_batch()
    whole = _PaperProtocolAUROC()
    whole.update(maps, masks)
    split = _PaperProtocolAUROC(max_elements=1)  # one threshold at a time
    split.update(maps[:2], masks[:2])
    split.update(maps[2:], masks[2:])
    assert int(whole.num_images) == int(split.num_images) == 4
    torch.testing.assert_close(split.fpr_sum, whole.fpr_sum, rtol=1e-12, atol=0)
    torch.testing.assert_close(split.tpr_sum, whole.tpr_sum, rtol=1e-12, atol=0)
    assert split.compute().item() == pytest.approx(whole.compute().item(), abs=1e-7)
    assert 0.5 < whole.compute().item() < 1  # noise below the defects: a real curve


def test_matches_the_authors_numpy_skimage_code() -> None:
    """Transcription of ``get_results``/``plot_average_roc`` of the authors' ``src/test.py`` (skimage opening of a
    float64 0/1 mask with disk(4), FPR/TPR per image, np.mean over images), sorted as the metric sorts ties."""
    morphology = pytest.importorskip("skimage.morphology")
    maps, masks = random_batch(num=3, seed=1)
    metric = _PaperProtocolAUROC()
    metric.update(maps, masks.unsqueeze(1))
    all_fpr, all_tpr = [], []
    for threshold in np.arange(0.01, 1.01, 1.01 / 50):
        rates = []
        for residual, gt in zip(maps[:, 0].numpy(), masks.numpy(), strict=True):
            mask = np.zeros(residual.shape)
            mask[residual > threshold] = 1
            mask = morphology.opening(mask, morphology.disk(4)) > 0.5
            true_pos, false_pos = (mask & gt).sum(), (mask & ~gt).sum()
            rates.append((false_pos / (~gt).sum(), true_pos / gt.sum()))
        all_fpr.append(np.mean([r[0] for r in rates]))
        all_tpr.append(np.mean([r[1] for r in rates]))
    fpr_np, tpr_np = np.array(all_fpr), np.array(all_tpr)
    order = np.lexsort((tpr_np, fpr_np))
    fpr, tpr = metric.curve()
    np.testing.assert_allclose(fpr.numpy(), fpr_np[order], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tpr.numpy(), tpr_np[order], rtol=1e-12, atol=1e-15)
    assert metric.compute().item() == pytest.approx(np.trapezoid(tpr_np[order], fpr_np[order]), abs=1e-7)


def test_anomalib_batch_and_evaluator() -> None:
    mask = square_mask()
    batch = ImageBatch(
        image=torch.rand(1, 3, SIZE, SIZE), anomaly_map=torch.full((1, 1, SIZE, SIZE), 0.5), gt_mask=mask
    )
    metric = PaperProtocolAUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", opening_radius=4)
    assert metric.name == "pixel_PaperProtocolAUROC"
    evaluator = Evaluator(test_metrics=[metric])
    evaluator.on_test_batch_end(None, None, None, batch, 0)  # type: ignore[arg-type]
    assert metric.compute().item() == 0.5
    with pytest.raises(ValueError, match="gt_mask"):
        metric.update(ImageBatch(image=torch.rand(1, 3, SIZE, SIZE), anomaly_map=torch.rand(1, 1, SIZE, SIZE)))
    figure, title = metric.generate_figure()
    assert title == "Paper-protocol ROC" and figure.axes


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        _PaperProtocolAUROC(thresholds=[])
    with pytest.raises(ValueError, match="opening_radius"):
        _PaperProtocolAUROC(opening_radius=-1)
    with pytest.raises(ValueError, match="same B, H, W"):
        _PaperProtocolAUROC().update(torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 9, dtype=torch.bool))


def _test_set(root: Path, good: bool, defective: bool, masks: bool = True) -> Path:
    """An MVTec-layout copy of the embedded data with only some of its test images (4 training images), with or
    without the masks of the defective ones."""
    from .helpers import EMBEDDED

    data = root / "part"
    (data / "train" / "good").mkdir(parents=True)
    for source in sorted((EMBEDDED / "train" / "good").glob("*.png"))[:4]:
        shutil.copy(source, data / "train" / "good" / source.name)
    if good:
        shutil.copytree(EMBEDDED / "test" / "good", data / "test" / "good")
    if defective:
        shutil.copytree(EMBEDDED / "test" / "pitting", data / "test" / "pitting")
        if masks:
            shutil.copytree(EMBEDDED / "ground_truth", data / "ground_truth")
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("good", "defective", "undefined"),
    [
        (True, False, {"image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Score"}),
        (False, True, {"image_AUROC"}),  # F1 is defined on defective images alone
        (True, None, {"pixel_AUROC", "pixel_AUPRO", "pixel_F1Score"}),  # defective images, no ground_truth/
    ],
)
def test_metrics_a_test_set_cannot_define_are_nan(
    tmp_path: Path, good: bool, defective: bool | None, undefined: set
) -> None:
    # anomalib printed 0.0 for every metric of a test set with only defect-free images, which looks like a result;
    # without ground_truth/ it crashed in pandas. defective=None: defective images without masks.
    from anomalib.engine import Engine

    from anomalib_ssimae import SsimAe
    from anomalib_ssimae.data import MVTecAD

    root = _test_set(tmp_path / "data", good, defective is not False, masks=defective is True)
    datamodule = MVTecAD(root=root, category="part", num_workers=0, eval_batch_size=8, val_split_mode="none")
    engine = Engine(accelerator="auto", devices=1, logger=False, default_root_dir=tmp_path / "results")
    model = SsimAe(image_size=[208, 512], visualizer=False)
    with pytest.warns(UserWarning, match="cannot be computed: the test set has no"):
        results = engine.test(model, datamodule=datamodule, verbose=False)[0]
    assert {name for name, value in results.items() if math.isnan(value)} == undefined
    assert all(0 <= value <= 1 for name, value in results.items() if name not in undefined and name.startswith("pixel"))


def test_one_grayscale_opening_equals_the_binary_openings() -> None:
    """The metric opens each map once (flat grayscale opening) and thresholds it; that equals thresholding first and
    opening each of the 50 binary masks (kornia, geodesic border), mask for mask, on maps with blobs and noise."""
    maps, _ = random_batch(num=3, seed=2)
    maps = torch.nn.functional.avg_pool2d(maps, 3, 1, 1)  # blobs of every size around the disk's
    metric = _PaperProtocolAUROC()
    opened = metric._open(maps[:, 0])
    differ = 0
    for threshold in PAPER_THRESHOLDS.tolist():
        binary = (maps > threshold).float()
        reference = kornia.morphology.opening(binary, metric.footprint.double(), border_type="geodesic") > 0.5
        assert torch.equal(opened[:, None] > threshold, reference), threshold
        differ += int((reference != (maps > threshold)).sum())
    assert differ > 1000  # the opening did change the masks: the comparison is not vacuous
