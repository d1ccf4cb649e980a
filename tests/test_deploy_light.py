"""The light deployment path (issue 28): ``ssimae-predict`` and ``anomalib_ssimae.deploy``'s prediction run with
OpenVINO, NumPy and Pillow alone, and what replaced anomalib's and SciPy's functions on it gives the same bytes.

The subprocesses refuse to import torch, Lightning, anomalib and SciPy (an import hook raises ``ImportError``, as on a
machine without them) and report what was tried and what is loaded: both must be empty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_ssimae.fpr import FPR_GRID
from anomalib_ssimae.records import connected_regions, defect_regions, overlay_picture

from .helpers import EMBEDDED

HEAVY = ("torch", "lightning", "pytorch_lightning", "anomalib", "scipy")

# Runs anomalib_ssimae.deploy.cli.main(argv) with the heavy packages made unimportable; the last line of stdout is
# {"code": exit code, "tried": heavy imports attempted, "loaded": heavy modules in sys.modules}.
LIGHT_RUN = textwrap.dedent(
    f"""
    import importlib.abc, json, sys

    HEAVY = {HEAVY!r}
    tried = []

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                tried.append(name)
                raise ImportError(f"{{name}} is not installed on this (simulated) deployment machine")
            return None

    sys.meta_path.insert(0, Refuse())
    from anomalib_ssimae.deploy.cli import main

    try:
        main(sys.argv[1:])
        code = 0
    except SystemExit as stop:
        code = stop.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print(json.dumps({{"code": code, "tried": tried, "loaded": loaded}}))
    """
)


def run_light(*argv: str) -> tuple[dict, subprocess.CompletedProcess]:
    """``ssimae-predict argv`` in a fresh interpreter without the heavy packages: (report, process)."""
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_RUN, *argv], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def test_help_imports_no_torch_lightning_anomalib_or_scipy() -> None:
    report, result = run_light("--help")
    assert report == {"code": 0, "tried": [], "loaded": []}
    assert result.stdout.startswith("usage: ssimae-predict")


def test_ssimae_predict_help_exits_0() -> None:
    script = Path(sys.executable).with_name("ssimae-predict")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "anomalib_ssimae.deploy.cli"]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: ssimae-predict")


@pytest.mark.slow
def test_prediction_with_an_export_imports_no_torch_lightning_anomalib_or_scipy(tmp_path: Path) -> None:
    from anomalib_ssimae import SsimAe

    xml = SsimAe(image_size=[128, 256]).to_openvino(tmp_path / "export")  # untrained: the path matters, not scores
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((EMBEDDED / "test" / "pitting").glob("*.png"))[:2]:
        shutil.copy(path, images)
    report, result = run_light(str(xml), str(images), str(tmp_path / "out"))
    assert report == {"code": 0, "tried": [], "loaded": []}, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == sorted(p.name for p in images.iterdir())
    assert all("error" not in r and 0 <= r["anomaly_score"] <= 1 and Path(r["overlay"]).is_file() for r in records)
    assert "2 images predicted" in result.stdout

    # OpenVINO shares an input array by default: a later imap() on the detector wrote into the caller's batch
    from anomalib_ssimae.deploy import OpenVinoDetector

    detector = OpenVinoDetector(xml)
    batch = np.random.default_rng(0).random((1, 3, 128, 256), dtype=np.float32)
    kept = batch.copy()
    first = detector(batch)["pred_score"]
    other = np.random.default_rng(1).random((1, 3, 128, 256), dtype=np.float32)
    assert len(list(detector.imap([("other", other)], jobs=1))) == 1
    assert np.array_equal(batch, kept)
    assert np.array_equal(detector(batch)["pred_score"], first)


def test_fpr_grid_is_torchs_logspace_bit_for_bit() -> None:
    assert np.array_equal(FPR_GRID, torch.logspace(0, -6, 61, dtype=torch.float64).numpy())
    assert FPR_GRID.dtype == np.float64 and not FPR_GRID.flags.writeable


def scipy_regions(mask: np.ndarray) -> list[tuple[int, list[int]]]:
    """What defect_regions used before (0.3.0): scipy.ndimage.label, 8-connected, in label order."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return []
    areas = np.bincount(labels.ravel())[1:]
    return [
        (int(areas[i]), [int(box[1].start), int(box[0].start), int(box[1].stop - 1), int(box[0].stop - 1)])
        for i, box in enumerate(ndimage.find_objects(labels))
    ]


def test_connected_regions_equal_scipys_labels() -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):  # sizes from one pixel, densities from sparse specks to one region with holes
        height, width = rng.integers(1, 48, size=2)
        mask = rng.random((height, width)) < rng.choice([0.03, 0.2, 0.45, 0.6, 0.9])
        assert connected_regions(mask) == scipy_regions(mask)
    snake = np.zeros((61, 61), dtype=bool)  # one region joined alternately at the right and left ends
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    for mask in (snake, snake.T, np.eye(9, dtype=bool)[::-1], np.zeros((3, 4), dtype=bool), np.ones((2, 5), bool)):
        assert connected_regions(mask) == scipy_regions(mask)
    assert len(connected_regions(snake.T)) == 1


def test_defect_regions_keep_largest_first_and_scale() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = True
    mask[6:8, 5:8] = True
    assert defect_regions(mask, (16, 32)) == [
        {"area": 6 * 2 * 4, "bbox": [20, 12, 31, 15]},
        {"area": 2 * 4, "bbox": [0, 0, 3, 1]},
    ]


def anomalib_overlay(image: Image.Image, anomaly_map: np.ndarray, mask: np.ndarray) -> Image.Image:
    """What overlay_picture drew before (0.3.0), with anomalib's functions."""
    from anomalib.visualization.image.functional import overlay_images, visualize_anomaly_map, visualize_mask

    heat = visualize_anomaly_map(np.asarray(anomaly_map, dtype=np.float32), colormap=True).resize(image.size)
    contour = visualize_mask(
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(image.size, Image.NEAREST),
        mode="contour",
        color=(255, 0, 0),
    )
    return overlay_images(image, [heat, contour], alpha=[0.4, 1.0])


def test_overlay_equals_anomalibs_pixel_for_pixel() -> None:
    rng = np.random.default_rng(1)
    real = Image.open(min((EMBEDDED / "test" / "pitting").glob("*.png"))).convert("RGB")
    cases = [(real, rng.random((128, 256), dtype=np.float32))]
    cases.append((Image.new("RGB", (16, 16)), (np.arange(256, dtype=np.float32) / 255).reshape(16, 16)))  # all 256
    for _ in range(8):
        height, width = rng.integers(8, 200, size=2)
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        cases.append((image, rng.random(tuple(rng.integers(4, 64, size=2)), dtype=np.float32)))
    for image, anomaly_map in cases:
        mask = anomaly_map > rng.random()
        ours, theirs = overlay_picture(image, anomaly_map, mask), anomalib_overlay(image, anomaly_map, mask)
        assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
        assert ours.tobytes() == theirs.tobytes()
