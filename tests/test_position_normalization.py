"""Position normalisation of the anomaly map: constructed residual fields with a raised border, and a real fit."""

from __future__ import annotations

import pytest
import torch
from anomalib.metrics.auroc import _AUROC

from anomalib_ssimae import SsimAe
from anomalib_ssimae.models.ssim_ae.anomaly_map import PositionNormalization
from anomalib_ssimae.models.ssim_ae.torch_model import SsimAeModel

from .helpers import EMBEDDED, load_image

HEIGHT, WIDTH, BAND = 96, 160, 16


def _profile() -> torch.Tensor:
    """Expected defect-free residual: 0.10 inside, rising linearly to 0.133 (1.33x, as measured on BSData) over the
    outer 30 px, as a (1, 1, H, W) map."""
    rows, cols = torch.arange(HEIGHT), torch.arange(WIDTH)
    dist = torch.minimum(torch.minimum(rows, HEIGHT - 1 - rows)[:, None], torch.minimum(cols, WIDTH - 1 - cols)[None])
    return (0.1 * (1 + 0.33 * (1 - dist.clamp(max=30) / 30)))[None, None].float()


def _normal_maps(count: int, seed: int) -> torch.Tensor:
    noise = torch.randn(count, 1, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))
    return _profile() * (1 + 0.2 * noise)


def _border_ratio(maps: torch.Tensor) -> float:
    band = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    band[BAND:-BAND, BAND:-BAND] = False
    return float(maps[..., band].mean() / maps[..., ~band].mean())


def _auroc(maps: torch.Tensor, mask: torch.Tensor) -> float:
    metric = _AUROC()
    metric.update(maps.flatten(), mask.expand_as(maps).flatten().int())
    return float(metric.compute())


def test_unfitted_is_the_identity() -> None:
    maps = _normal_maps(2, 0)
    normalization = PositionNormalization((HEIGHT, WIDTH))
    assert not normalization.fitted
    assert torch.equal(normalization(maps), maps)


def test_fit_flattens_the_border_of_new_defect_free_maps() -> None:
    normalization = PositionNormalization((HEIGHT, WIDTH))
    normalization.fit(_normal_maps(32, 0))
    unseen = _normal_maps(8, 1)
    assert 1.15 < _border_ratio(unseen) < 1.25  # the constructed rise, averaged over the 16 px band
    assert abs(_border_ratio(normalization(unseen)) - 1.0) < 0.02
    # the level is kept: inside, where the expected residual is 0.1, the weight is level / 0.1
    level = float(_profile().mean())
    assert abs(float(normalization.weight[..., 40:56, 60:100].mean()) - level / 0.1) < 0.02


def test_gain_is_capped_where_defect_free_images_have_no_residual() -> None:
    maps = _normal_maps(16, 0)
    maps[..., 40:60, 60:100] = 0  # a saturated area: SSIM of a constant patch with itself is 1
    normalization = PositionNormalization((HEIGHT, WIDTH), floor=0.25)
    normalization.fit(maps)
    assert abs(float(normalization.weight.max()) - 4.0) < 1e-4  # 1 / floor


def test_a_faint_defect_at_the_corner_is_still_found_and_one_in_the_centre_better() -> None:
    # Defect-free residual noise is proportional to the expected residual (20 %), so the normalised map is a
    # signal-to-noise map: the raised border no longer outshines a central defect, and a corner defect, which sits
    # where defect-free images vary more, is still separated.
    normalization = PositionNormalization((HEIGHT, WIDTH))
    normalization.fit(_normal_maps(32, 0))
    results = {}
    for place, (top, left) in {"corner": (0, 0), "centre": (36, 68)}.items():
        maps = _normal_maps(4, 2)
        mask = torch.zeros(1, 1, HEIGHT, WIDTH, dtype=torch.bool)
        mask[..., top : top + 24, left : left + 24] = True
        maps = maps + 0.04 * mask  # a faint defect: 2 noise standard deviations inside
        results[place] = (_auroc(maps, mask), _auroc(normalization(maps), mask))
    (_, normalised_corner), (raw_centre, normalised_centre) = results["corner"], results["centre"]
    assert raw_centre < 0.8  # raw: the raised border of the defect-free area competes with the central defect
    assert normalised_centre > raw_centre + 0.1
    assert normalised_corner > 0.85
    assert normalised_corner > raw_centre + 0.05


def test_perfect_reconstructions_leave_the_weight_at_one() -> None:
    normalization = PositionNormalization((HEIGHT, WIDTH))
    normalization.fit(torch.zeros(4, 1, HEIGHT, WIDTH))
    assert bool(normalization.fitted)
    assert torch.equal(normalization.weight, torch.ones(1, 1, HEIGHT, WIDTH))


def test_checkpoints_with_and_without_the_buffers_load_both_ways() -> None:
    plain = SsimAe(image_size=[128, 160], visualizer=False)
    normalized = SsimAe(image_size=[128, 160], position_normalization=True, visualizer=False)
    normalized.load_state_dict(plain.state_dict())  # a 0.2.0 checkpoint: unfitted, fitted at test/predict
    position = normalized.model.anomaly_map_generator.position
    assert not bool(position.fitted)
    assert torch.equal(position.weight, torch.ones(1, 1, 128, 160))
    assert torch.equal(normalized.model.network.encoder[0].weight, plain.model.network.encoder[0].weight)
    position.fit(torch.rand(2, 1, 128, 160, generator=torch.Generator().manual_seed(0)))
    with pytest.warns(UserWarning, match="will not be normalised"):
        plain.load_state_dict(normalized.state_dict())


@torch.no_grad()
def test_fitted_on_real_images_their_maps_are_flatter() -> None:
    # An untrained network on real BSData images: its residual is far from uniform (border band 0.83x the interior)
    torch.manual_seed(0)
    model = SsimAeModel(position_normalization=(208, 512)).eval()
    images = [load_image(path) for path in sorted((EMBEDDED / "train" / "good").glob("*.png"))[:4]]
    model.fit_position_normalization(torch.cat(images[i : i + 2]) for i in (0, 2))
    tiled = model.reconstruct(torch.cat(images))
    raw = model.anomaly_map_generator.position_free_map(tiled.inputs, tiled.reconstruction)
    normalized = model.anomaly_prediction(tiled.inputs, tiled.reconstruction).anomaly_map
    band = torch.ones(208, 512, dtype=torch.bool)
    band[BAND:-BAND, BAND:-BAND] = False

    def ratio(maps: torch.Tensor) -> float:
        return float(maps[..., band].mean() / maps[..., ~band].mean())

    assert abs(ratio(raw) - 0.83) < 0.02
    # the capped gain (4x, reached where this network reconstructs almost perfectly) leaves part of it
    assert abs(ratio(normalized) - 1.0) < 0.5 * abs(ratio(raw) - 1.0)


def test_a_checkpoint_of_another_image_size_loads_with_its_weight_resized() -> None:
    small = SsimAe(image_size=[128, 320], position_normalization=True, visualizer=False)
    profile = torch.linspace(1, 2, 320).expand(1, 1, 128, 320)
    small.model.anomaly_map_generator.position.weight.copy_(profile)
    large = SsimAe(image_size=[208, 512], position_normalization=True, visualizer=False)
    with pytest.warns(UserWarning, match="resized"):
        large.load_state_dict(small.state_dict())
    weight = large.model.anomaly_map_generator.position.weight
    assert weight.shape == (1, 1, 208, 512)
    assert abs(float(weight[0, 0, 100, 0]) - 1.0) < 0.01  # the left edge stays the left edge
    assert abs(float(weight[0, 0, 100, -1]) - 2.0) < 0.01
    assert abs(float(weight[0, 0, 0, 256]) - 1.5) < 0.01
