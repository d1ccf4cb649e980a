"""Anomaly-map orientation by content (issue 10): a black square in the top-right corner of a real image, portrait
and landscape, must come out in the top-right corner of the map and of the record's ``regions``, on ``anomalib
predict`` (``Engine.predict`` on a folder, the model's ``predict_step``) and on the exported OpenVINO model
(``ssimae-predict``: :class:`OpenVinoDetector`, :func:`predict_folder`).

The network is replaced by a known reconstruction (:class:`Floor`), so the residual is the square alone. The other
tests compare record width and height only, which a transposed map resized to the image would pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine
from PIL import Image
from torch import nn

from anomalib_ssimae import SsimAe
from anomalib_ssimae.data.images import read_rgb
from anomalib_ssimae.deploy import OpenVinoDetector, predict_folder

from .helpers import EMBEDDED, fill_thresholds

SOURCE = Image.open(min((EMBEDDED / "test" / "good").glob("*.png"))).convert("RGB")  # real, 512 x 208
FLOOR = 20 / 255  # below every gray value of SOURCE (29/255 and up), above the square's 0
SIDE, INSET = 24, 16  # the square's side and its distance from the top and right border, in image pixels
MARGIN = 10  # image pixels the square's trace may grow or shrink: SSIM window (11 px), the two resizes
SIZES = {"portrait": (300, 200), "landscape": (200, 300)}  # (height, width)


class Floor(nn.Module):
    """Reconstruct a patch as itself with values raised to FLOOR: exact on the real image, while the black square
    comes back gray, so the residual is high on the square only (and independent of where a patch lies)."""

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return patches.clamp(min=FLOOR)


def square_box(height: int, width: int) -> list[int]:
    """[x0, y0, x1, y1] (inclusive) of the square in a ``height x width`` image."""
    return [width - INSET - SIDE, INSET, width - INSET - 1, INSET + SIDE - 1]


def write_images(folder: Path) -> None:
    """``portrait.png`` and ``landscape.png``: SOURCE resized, with the black square."""
    assert np.asarray(SOURCE.convert("L")).min() > FLOOR * 255 + 1  # Floor is exact on the real image
    folder.mkdir()
    for name, (height, width) in SIZES.items():
        pixels = np.array(SOURCE.resize((width, height), Image.Resampling.BILINEAR))
        x0, y0, x1, y1 = square_box(height, width)
        pixels[y0 : y1 + 1, x0 : x1 + 1] = 0
        Image.fromarray(pixels).save(folder / f"{name}.png")


def assert_top_right(name: str, anomaly_map: np.ndarray, regions: list[dict]) -> None:
    """The map's maximum (at model size, scaled to the image) and the only region lie on the square.

    The square is off the diagonal: a transposed map, resized back to the image, puts it at the bottom-left (and
    a flipped one at another corner), so this fails; a square on the diagonal (top-left) would survive a transpose.
    """
    height, width = SIZES[name]
    x0, y0, x1, y1 = square_box(height, width)
    anomaly_map = np.asarray(anomaly_map).reshape(np.asarray(anomaly_map).shape[-2:])
    row, col = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
    y, x = (row + 0.5) * height / anomaly_map.shape[0], (col + 0.5) * width / anomaly_map.shape[1]
    assert x0 - MARGIN <= x <= x1 + MARGIN and y0 - MARGIN <= y <= y1 + MARGIN, (name, x, y)
    assert len(regions) == 1, (name, regions)
    assert np.abs(np.subtract(regions[0]["bbox"], [x0, y0, x1, y1])).max() <= MARGIN, (name, regions)


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [[300, 208], [208, 300]], ids=["portrait-model", "landscape-model"])
def test_defect_corner_is_kept_on_every_prediction_path(image_size: list[int], tmp_path: Path) -> None:
    """Portrait and landscape images through a portrait and a landscape model (sizes the stride does not divide,
    so the border-aligned patches carry the square); raw threshold 0.5 on a residual of ~1 on the square, ~0
    elsewhere."""
    folder = tmp_path / "images"
    write_images(folder)
    model = fill_thresholds(SsimAe(image_size=image_size, visualizer=False).eval(), pixel_threshold=0.5, pixel_max=2)
    model.model.network = Floor()

    # (a) anomalib predict: Engine.predict on the folder (predict_step), its maps and PredictionRecords' records
    root = tmp_path / "lightning"
    engine = Engine(accelerator="auto", devices=1, logger=False, default_root_dir=root, enable_progress_bar=False)
    batches = engine.predict(model=model, data_path=folder)
    maps = {Path(p).stem: m for b in batches for p, m in zip(b.image_path, b.anomaly_map.cpu().numpy(), strict=True)}
    (records_path,) = root.rglob("predictions-*.jsonl")
    records = {Path(r["image"]).stem: r for r in map(json.loads, records_path.read_text().splitlines())}
    assert sorted(maps) == sorted(records) == sorted(SIZES)
    for name, size in SIZES.items():
        assert (records[name]["height"], records[name]["width"]) == size
        assert_top_right(name, maps[name], records[name]["regions"])

    # (b) the exported OpenVINO model: the detector's maps and predict_folder's records
    detector = OpenVinoDetector(model.to_openvino(tmp_path / "export"))
    records_path = predict_folder(detector, folder, tmp_path / "out")
    records = {Path(r["image"]).stem: r for r in map(json.loads, records_path.read_text().splitlines())}
    for name, size in SIZES.items():
        array, _ = read_rgb(folder / f"{name}.png")
        result = detector(array.transpose(2, 0, 1)[None])
        assert result["anomaly_map"].shape == (1, *image_size)
        assert (records[name]["height"], records[name]["width"]) == size
        assert_top_right(name, result["anomaly_map"][0], records[name]["regions"])
