"""Residual maps on a real image with a constructed defect."""

import pytest
import torch

from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator, residual_map


@pytest.mark.parametrize("residual", ["ssim", "l2", "ssim_l2"])
def test_zero_for_identical_images(residual: str, gray_image: torch.Tensor) -> None:
    assert residual_map(gray_image, gray_image, residual).abs().max() < 1e-6


def test_high_exactly_where_the_defect_is(gray_image: torch.Tensor) -> None:
    image = gray_image[:, :1]
    defect = image.clone()
    top, left, side = 100, 140, 20
    defect[..., top : top + side, left : left + side] = 1.0 - defect[..., top : top + side, left : left + side]
    ssim_res = residual_map(image, defect, "ssim")[0, 0]
    inside = ssim_res[top : top + side, left : left + side]
    assert inside.mean() > 0.5  # 0.62 on this gray BSData image: flat windows (std < 0.03) keep some SSIM
    # SSIM window 11: pixels more than 5 px from the square see identical windows -> residual exactly 0.
    far = torch.ones_like(ssim_res, dtype=torch.bool)
    far[top - 5 : top + side + 5, left - 5 : left + side + 5] = False
    assert ssim_res[far].abs().max() < 1e-6
    l2_res = residual_map(image, defect, "l2")[0, 0]
    changed = (image - defect)[0, 0] != 0
    assert torch.equal(l2_res > 0, changed)  # L2 is non-zero on changed pixels only
    assert ssim_res.argmax() // 256 in range(top - 5, top + side + 5)


def _delta_map() -> torch.Tensor:
    """A 21 x 21 map, 0 except a single pixel of 1 in the centre: (1, 1, 21, 21)."""
    anomaly_map = torch.zeros(1, 1, 21, 21)
    anomaly_map[..., 10, 10] = 1.0
    return anomaly_map


def test_image_scores_on_a_constructed_map() -> None:
    anomaly_map = _delta_map()
    assert AnomalyMapGenerator(score="mean").image_score(anomaly_map).item() == pytest.approx(1 / 441)
    assert AnomalyMapGenerator(score="top_mean", score_fraction=2 / 441).image_score(anomaly_map).item() == 0.5
    # max of the smoothed map: the centre of a 2-D Gaussian kernel of sigma 1 (9 taps), i.e. its 1-D centre squared
    taps = torch.exp(-(torch.arange(-4.0, 5.0) ** 2) / 2)
    expected = (1 / taps.sum()) ** 2
    assert AnomalyMapGenerator(score="max", score_sigma=1.0).image_score(anomaly_map).item() == pytest.approx(
        float(expected), rel=1e-4
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"score": "median"}, "score must be one of"),
        ({"score_fraction": 0.0}, r"score_fraction must be in \(0, 1\]"),
        ({"residual": "l1"}, "residual must be one of"),
    ],
)
def test_anomaly_map_generator_rejects_bad_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnomalyMapGenerator(**arguments)


def _pixel_auroc(anomaly_map: torch.Tensor, mask: torch.Tensor) -> float:
    """Pixel AUROC by ranks (ties averaged): the probability that a defect pixel outranks a normal one."""
    values = anomaly_map.flatten().double()
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    for value in values[mask.flatten()].unique():  # average the ranks of ties that involve defect pixels
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    positives = mask.flatten()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_a_defect_at_the_image_corner_scores_like_one_in_the_centre(pitting_image: torch.Tensor, corner: str) -> None:
    # A real image; its "reconstruction" differs only inside a 24 x 24 defect (the image's own texture, flipped),
    # placed once in the centre and once touching two image borders.
    image = pitting_image[:, :1]
    height, width, side = image.shape[-2], image.shape[-1], 24

    def with_defect(top: int, left: int) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = image.clone()
        region = (..., slice(top, top + side), slice(left, left + side))
        reconstruction[region] = image[region].flip(-1).flip(-2) * 0.5
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[top : top + side, left : left + side] = True
        return residual_map(image, reconstruction, "ssim")[0, 0], mask

    centre_map, centre_mask = with_defect((height - side) // 2, (width - side) // 2)
    top, left = (0, 0) if corner == "top_left" else (height - side, width - side)
    corner_map, corner_mask = with_defect(top, left)
    # the defect is at least as strong at the corner as in the centre (nothing damps the border), pixel by pixel too
    assert corner_map[corner_mask].mean() >= 0.9 * centre_map[centre_mask].mean()
    assert corner_map[corner_mask].min() >= 0.9 * centre_map[centre_mask].min()
    assert _pixel_auroc(corner_map, corner_mask) >= _pixel_auroc(centre_map, centre_mask) - 0.01
    # and the image score (maximum of the smoothed map) lies on the defect
    smoothed = AnomalyMapGenerator(score_sigma=4.0).blur(corner_map[None, None])[0, 0]
    row, col = divmod(int(smoothed.argmax()), width)
    assert corner_mask[max(0, row - 8) : row + 9, max(0, col - 8) : col + 9].any()


@pytest.mark.parametrize("sigma", [1.0, 4.0, 16.0])
def test_separable_blur_equals_anomalibs_gaussian_blur(sigma: float) -> None:
    from anomalib.models.components import GaussianBlur2d

    from anomalib_ssimae.models.ssim_ae.anomaly_map import SeparableGaussianBlur

    maps = torch.rand(2, 1, 208, 160, generator=torch.Generator().manual_seed(0))
    expected = GaussianBlur2d(sigma=sigma, channels=1)(maps)
    assert (SeparableGaussianBlur(sigma)(maps) - expected).abs().max() < 5e-5  # float32 sums of up to 129^2 terms


def test_score_sigma_zero_scores_the_maximum_of_the_map_itself() -> None:
    # DeepPCB's defects are a few pixels: its config scores the raw maximum (score_sigma: 0)
    from anomalib_ssimae.models.ssim_ae.anomaly_map import SeparableGaussianBlur

    maps = torch.rand(2, 1, 64, 48, generator=torch.Generator().manual_seed(0))
    maps[1, 0, 0, 47] = 3.0  # a one-pixel peak in a corner
    assert torch.equal(SeparableGaussianBlur(0.0)(maps), maps)
    scores = AnomalyMapGenerator(residual="l2", score_sigma=0.0).image_score(maps)
    assert torch.equal(scores, maps.amax(dim=(1, 2, 3))) and scores[1] == 3.0
    assert AnomalyMapGenerator(score_sigma=4.0).image_score(maps)[1] < 1.0  # smoothed, the peak drowns in the noise
    with pytest.raises(ValueError, match="score_sigma must be >= 0, got -1"):
        SeparableGaussianBlur(-1.0)
