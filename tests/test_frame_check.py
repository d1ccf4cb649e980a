"""Out-of-distribution frames are never "normal" (issue 30): a blank grey frame scored 0.0 on the quickstart model
(image AUROC 0.92), and white and inverted frames were called normal too. The frame check, fitted on the training
images' intensity histograms, makes them anomalous in the model, the exported graph and the prediction records,
without false alarms on the embedded defect-free and defective test images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data.utils import read_image
from anomalib.engine import Engine
from PIL import Image

from anomalib_ssimae import SsimAe
from anomalib_ssimae.deploy import OpenVinoDetector, predict_folder
from anomalib_ssimae.models.ssim_ae.frame_check import FLOOR, FrameCheck

from .helpers import EMBEDDED

TEST_IMAGES = sorted((EMBEDDED / "test").rglob("*.png"))  # 12 defect-free, 16 pitting, 512 x 208


def bad_frames() -> dict[str, torch.Tensor]:
    """Frames a camera or a line can deliver, at the embedded images' 512 x 208: ``(1, 3, 208, 512)`` each."""
    good = read_image(TEST_IMAGES[0], as_tensor=True)[None]
    return {
        "blank grey": torch.full_like(good, float(good.mean())),
        "white": torch.ones_like(good),
        "black": torch.zeros_like(good),
        "inverted": 1 - good,
        "under-exposed": good * 0.5,
    }


def test_histogram_distances_of_constructed_frames() -> None:
    """Two kinds of defect-free image (dark and bright halves of the grey range, like lighting sets): each is near
    its own kind, so neither is rejected, while a frame between them, or blank, is."""
    generator = torch.Generator().manual_seed(0)
    dark = torch.rand(8, 1, 64, 64, generator=generator) * 0.3 + 0.1
    bright = torch.rand(8, 1, 64, 64, generator=generator) * 0.3 + 0.6
    check = FrameCheck(channels=1)
    check.fit([dark, bright])
    assert float(check.limit) == pytest.approx(max(2 * float(check.distance(dark[:1])), FLOOR), abs=0.2)
    assert check(torch.cat([dark[:2], bright[:2]])).tolist() == [False] * 4
    middle = torch.rand(1, 1, 64, 64, generator=generator) * 0.2 + 0.4  # grey levels no training image has
    blank = torch.full((1, 1, 64, 64), 0.25)
    assert check(torch.cat([middle, blank])).tolist() == [True, True]
    assert float(check.distance(blank)) == pytest.approx(2 - 2 * float(check.histogram(dark[:1])[0, 0, 8]), abs=0.3)
    with pytest.raises(ValueError, match="at least 2 defect-free training images"):
        FrameCheck(channels=1).fit([dark[:1]])


@pytest.mark.slow
def test_bad_frames_are_anomalous_in_the_model_the_export_and_the_records(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, _ = trained
    model = SsimAe.load_from_checkpoint(checkpoint).eval()
    assert bool(model.model.frame_check.fitted)  # fitted when training started
    frames = bad_frames()
    images = torch.cat(list(frames.values()))
    with torch.no_grad():
        out = model(images)
        real = torch.cat([read_image(p, as_tensor=True)[None] for p in TEST_IMAGES])
        assert not model.model.out_of_distribution(model.model.prepare(model.pre_processor.transform(real))).any()
    assert out.pred_label.tolist() == [True] * len(frames)
    assert out.pred_score.tolist() == [1.0] * len(frames)

    # the exported graph carries the check (f32 OpenVINO, as ssimae-predict runs it)
    detector = OpenVinoDetector(model.to_openvino(tmp_path / "export"))
    result = detector(images.numpy())
    assert result["pred_label"].tolist() == [True] * len(frames)
    assert np.allclose(result["pred_score"], 1.0)

    # anomalib predict's records say why
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, frame in frames.items():
        array = (frame[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{name.replace(' ', '_')}.png")
    Image.open(TEST_IMAGES[0]).save(folder / "good.png")
    Engine(default_root_dir=tmp_path / "predict", logger=False, accelerator="auto", devices=1).predict(
        model=model, data_path=folder
    )
    records_file = next((tmp_path / "predict").rglob("predictions-*.jsonl"))
    records = {Path(r["image"]).stem: r for r in map(json.loads, records_file.read_text().splitlines())}
    for name in frames:
        record = records[name.replace(" ", "_")]
        assert record["label"] == "anomalous"
        assert record["reason"].startswith("out of distribution")
    assert "reason" not in records["good"]

    # ssimae-predict's records too (the check recomputed from calibration.json, NumPy only)
    assert len(json.loads((detector.model_path.parent / "calibration.json").read_text())["frame_check"]["memory"]) >= 2
    lines = predict_folder(detector, folder, tmp_path / "ssimae-predict").read_text().splitlines()
    records = {Path(r["image"]).stem: r for r in map(json.loads, lines)}
    assert {name for name, r in records.items() if r.get("reason", "").startswith("out of distribution")} == {
        name.replace(" ", "_") for name in frames
    }
    assert records["good"]["label"] in ("normal", "anomalous") and "reason" not in records["good"]
