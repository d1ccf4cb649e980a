"""Tiled inference: every pixel covered, border reached, exact image back with an identity network."""

import pytest
import torch
from torch import nn

from anomalib_ssimae.components.tiling import PatchTiler, axis_runs
from anomalib_ssimae.models.ssim_ae.torch_model import SsimAeModel


def test_axis_runs() -> None:
    assert axis_runs(256, 128, 32) == [(0, 5)]  # 0, 32, 64, 96, 128: 5 x 5 = 25 patches (paper §5)
    assert axis_runs(208, 128, 32) == [(0, 3), (80, 1)]  # 0, 32, 64 + 80 flush with the border
    assert axis_runs(128, 128, 32) == [(0, 1)]
    with pytest.raises(ValueError, match="smaller than patch_size"):
        axis_runs(100, 128, 32)
    with pytest.raises(ValueError, match="stride must be"):
        axis_runs(256, 128, 129)


@pytest.mark.parametrize(
    ("height", "width", "patches"), [(256, 256, 25), (208, 512, 52), (130, 131, 4), (300, 400, 70)]
)
def test_every_pixel_covered_and_image_restored(height: int, width: int, patches: int) -> None:
    tiler = PatchTiler(128, 32)
    images = torch.rand(2, 3, height, width)
    tiles = tiler.tile(images)
    assert tiles.shape == (2 * patches, 3, 128, 128)
    coverage = tiler._fold(torch.ones(1, 128 * 128, patches), height, width)
    assert coverage.min() >= 1  # every pixel lies in at least one patch
    assert (tiler.untile(tiles, height, width) - images).abs().max() < 1e-6


def test_last_patch_is_flush_with_the_border() -> None:
    tiler = PatchTiler(128, 32)
    image = torch.zeros(1, 1, 208, 512)
    image[..., -1, -1] = 1.0  # bottom-right pixel
    tiles = tiler.tile(image)
    assert tiles[-1, 0, -1, -1] == 1.0  # the last patch ends exactly at the corner


@pytest.mark.parametrize("in_channels", [1, 3])
def test_identity_network_gives_zero_anomaly(in_channels: int, pitting_image: torch.Tensor) -> None:
    model = SsimAeModel(in_channels=in_channels).eval()
    model.network = nn.Identity()
    inputs, reconstruction, _, _ = model.reconstruct(pitting_image)
    assert (reconstruction - inputs).abs().max() < 1e-6
    prediction = model(pitting_image)
    assert prediction.anomaly_map.shape == (1, 1, 208, 512)
    # Inputs equal to 1e-7 (rounding of the averaging); float32 SSIM resolves that to ~1e-4 in flat regions,
    # where E[x^2] - E[x]^2 cancels against C2 = 9e-4.
    assert prediction.anomaly_map.abs().max() < 1e-3
    assert prediction.pred_score.abs().max() < 1e-4


def test_grayscale_conversion_keeps_gray_values(gray_image: torch.Tensor) -> None:
    model = SsimAeModel(in_channels=1).eval()
    model.network = nn.Identity()
    inputs, _, _, _ = model.reconstruct(gray_image)
    assert inputs.shape == (1, 1, 256, 256)
    assert (inputs - gray_image[:, :1]).abs().max() < 1e-6  # a gray image as RGB: channels equal


@pytest.mark.parametrize("chunk_size", [1, 7, 25, 1000])
@pytest.mark.parametrize(("height", "width"), [(208, 300), (256, 256), (130, 131)])
def test_apply_in_chunks_is_untile_bit_for_bit(chunk_size: int, height: int, width: int) -> None:
    # Sizes the stride divides or not (border-aligned row, column and corner); chunks of 1, of 7 and 25 (across the
    # two images) and one of all. An elementwise function gives every chunking the same outputs.
    tiler = PatchTiler(128, 32)
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))

    def function(patches: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(patches * 3 - 1)[:, :2]  # other values and channels than the input

    expected_patches = tiler.tile(images)
    expected_outputs = function(expected_patches)
    expected = tiler.untile(expected_outputs, height, width)
    stitched, patches, outputs = tiler.apply(images, function, chunk_size, keep_patches=True)
    assert torch.equal(stitched, expected)  # same float sums as F.fold on the CPU, not just close
    assert torch.equal(patches, expected_patches) and torch.equal(outputs, expected_outputs)  # tile's order
    assert tiler.apply(images, function, chunk_size)[1:] == (None, None)
    seen = []  # on_chunk sees every patch once, with the index of its image
    tiler.apply(images, function, chunk_size, on_chunk=lambda index, inputs, outputs: seen.append((index, inputs)))
    index = torch.cat([i for i, _ in reversed(seen)])  # chunks arrive last to first
    assert torch.equal(torch.cat([p for _, p in reversed(seen)]), expected_patches)
    assert torch.equal(index, torch.arange(2).repeat_interleave(len(expected_patches) // 2))


@pytest.mark.parametrize("patch_batch_size", [1, 7, 1000])
def test_patches_in_chunks_give_the_same_map(patch_batch_size: int) -> None:
    # 208 x 300 at stride 32 (divides neither side - 128): 4 x 7 = 28 patches per image with border-aligned ones,
    # 56 for the batch; chunks of 1, of 7 (across the two images) and one chunk of all
    images = torch.rand(2, 3, 208, 300, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = SsimAeModel(patch_batch_size=patch_batch_size).eval()
    with torch.no_grad():
        inputs = model.prepare(images)
        patches = model.tiler.tile(inputs)  # the reference: all patches at once, as the export traces it
        rebuilt = model.network(patches)
        expected = model.tiler.untile(rebuilt, 208, 300)
        expected_map = model.anomaly_prediction(inputs, expected)
        tiled = model.reconstruct(images)
        kept = model.reconstruct(images, keep_patches=True)
        result = model(images)
    assert tiled.input_patches is None and tiled.reconstructed_patches is None  # not held unless asked
    # the network's float sums may depend on its batch size: equal to rounding, exactly so for one chunk of all
    tolerance = 0 if patch_batch_size >= len(patches) else 1e-6
    assert (tiled.reconstruction - expected).abs().max() <= tolerance
    assert (result.anomaly_map - expected_map.anomaly_map).abs().max() <= 10 * tolerance
    assert (result.pred_score - expected_map.pred_score).abs().max() <= 10 * tolerance
    assert torch.equal(kept.input_patches, patches)  # same patches in the same order, for val_loss
    assert (kept.reconstructed_patches - rebuilt).abs().max() <= tolerance
    assert torch.equal(kept.reconstruction, tiled.reconstruction)


def test_patch_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="patch_batch_size must be at least 1"):
        SsimAeModel(patch_batch_size=0)


def test_coverage_is_the_folded_count() -> None:
    tiler = PatchTiler(128, 32)
    expected = tiler._fold(torch.ones(1, 128 * 128, 28), 208, 300)[0, 0]
    assert torch.equal(tiler.coverage(208, 300), expected)


def test_val_loss_in_chunks_equals_the_loss_of_all_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation sums the loss chunk by chunk (7 patches at a time, across images) over the defect-free images
    only: the same value as the loss of all their patches at once, with the defective image's patches left out."""
    from anomalib.data import ImageBatch

    from anomalib_ssimae.models import SsimAe

    torch.manual_seed(0)
    model = SsimAe(image_size=(208, 300), patch_batch_size=7).eval()
    images = torch.rand(3, 3, 208, 300, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([False, True, False])  # the middle image is defective
    logged = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kwargs: logged.update({name: (value, kwargs)}))
    with torch.no_grad():
        model.validation_step(ImageBatch(image=images, gt_label=labels), 0)
        kept = model.model.reconstruct(images[~labels], keep_patches=True)
        expected = model.loss(kept.input_patches, kept.reconstructed_patches)
    value, kwargs = logged["val_loss"]
    assert len(kept.input_patches) == 2 * 28  # 4 x 7 patches per image at stride 32
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    assert kwargs["batch_size"] == 2
    with torch.no_grad():  # no defect-free image in the batch: nothing logged
        logged.clear()
        model.validation_step(ImageBatch(image=images[1:2], gt_label=labels[1:2]), 0)
    assert "val_loss" not in logged
