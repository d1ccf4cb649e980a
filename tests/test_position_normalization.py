"""Position normalisation of the anomaly map: constructed residual fields with a raised border, and a real fit."""

from __future__ import annotations

import torch
from anomalib.metrics.auroc import _AUROC

from anomalib_ssimae.models.ssim_ae.anomaly_map import PositionNormalization

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
