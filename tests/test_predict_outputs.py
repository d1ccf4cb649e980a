"""What prediction and export write (issue 10): one picture per input and never over an existing one, export
metadata that states what the graph does, refused ONNX opsets and false-positive rates, warnings for enlarged
images.

Uses the short defect-free-calibrated training of ``conftest.trained`` (one per session: 128 crops at 256 x 256
on the embedded data), so the checkpoint, thresholds and pre-processor are real.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine
from PIL import Image

from anomalib_ssimae import SsimAe
from anomalib_ssimae.deploy import OpenVinoDetector, normalized_cut, predict_folder
from anomalib_ssimae.models.ssim_ae.export import ignored_cli_model_arguments

from .helpers import EMBEDDED

GOOD = min((EMBEDDED / "test" / "good").glob("*.png"))  # a real 512 x 208 defect-free image


def predict(checkpoint: Path, folder: Path, root: Path) -> tuple[list[dict], Path]:
    """`anomalib predict --ckpt_path C --data FOLDER --default_root_dir ROOT` in-process (the same Engine.predict
    call the CLI makes). Returns the records and the records file."""
    model = SsimAe.load_from_checkpoint(checkpoint)
    engine = Engine(default_root_dir=root, logger=False, accelerator="auto", devices=1, enable_progress_bar=False)
    engine.predict(model=model, data_path=folder)
    runs = sorted((root / "SsimAe" / "latest").glob("predictions-*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
    return [json.loads(line) for line in runs[-1].read_text().splitlines()], runs[-1]


def two_lines(folder: Path) -> tuple[Path, Path]:
    """``line1/good/000.png`` (a real defect-free image) and ``line2/good/000.png`` (its negative): same name,
    different pictures."""
    first, second = folder / "line1" / "good" / "000.png", folder / "line2" / "good" / "000.png"
    for path in (first, second):
        path.parent.mkdir(parents=True)
    image = Image.open(GOOD).convert("RGB")
    image.save(first)
    Image.fromarray(255 - np.asarray(image)).save(second)
    return first, second


def first_tile_mean(picture: str | Path) -> float:
    """Mean of the panel's first tile (the input image, 256 x 256), in [0, 1]."""
    return float(np.asarray(Image.open(picture).convert("L"), dtype=np.float64)[:256, :256].mean() / 255)


def test_same_name_in_two_folders_gets_two_pictures(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, _ = trained
    first, second = two_lines(tmp_path / "in")
    root = tmp_path / "out"
    # a picture the user already has where anomalib 2.7 put predict pictures (images/<parent folder>/<name>)
    existing = root / "SsimAe" / "latest" / "images" / "good" / "000.png"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"keep me")

    records, records_file = predict(checkpoint, tmp_path / "in", root)
    by_image = {Path(r["image"]): r for r in records}
    assert set(by_image) == {first, second}
    run = root / "SsimAe" / "latest" / "images" / records_file.stem  # pictures in a folder named like the records
    overlays = {image: Path(r["overlay"]) for image, r in by_image.items()}
    assert overlays == {first: run / "line1" / "good" / "000.png", second: run / "line2" / "good" / "000.png"}
    # each picture shows its own input: the first tile is the image (the negative has the complementary mean)
    mean = float(np.asarray(Image.open(GOOD).convert("L").resize((256, 256)), dtype=np.float64).mean() / 255)
    assert first_tile_mean(overlays[first]) == pytest.approx(mean, abs=0.02)
    assert first_tile_mean(overlays[second]) == pytest.approx(1 - mean, abs=0.02)
    assert existing.read_bytes() == b"keep me"
    assert not list(run.rglob("*.partial"))  # written through a temporary name, renamed when complete

    # a second run writes new files and leaves the first run's pictures and records as they were
    before = {path: path.read_bytes() for path in overlays.values()}
    records_before = records_file.read_bytes()
    second_records, second_file = predict(checkpoint, tmp_path / "in", root)
    assert second_file != records_file
    assert {Path(r["overlay"]).parent.parent.parent for r in second_records} == {
        root / "SsimAe" / "latest" / "images" / second_file.stem
    }
    assert all(path.read_bytes() == content for path, content in before.items())
    assert records_file.read_bytes() == records_before


def test_export_metadata_states_what_the_graph_does(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """``load_from_checkpoint(ckpt, image_size=[512, 512])``: anomalib restores the checkpoint's 256 x 256
    pre-processor, so the graph works at 256; calibration.json said 512. Now it says 256, with a warning."""
    checkpoint, _ = trained
    model = SsimAe.load_from_checkpoint(checkpoint, image_size=[512, 512])
    with pytest.warns(UserWarning, match=r"image_size \[512, 512\] does not take effect: .* resizes to \[256, 256\]"):
        path = model.to_torch(tmp_path)
    meta = json.loads((path.parent / "calibration.json").read_text())
    exported = torch.load(path, weights_only=False)["model"].eval()
    with torch.no_grad():
        out = exported(torch.rand(1, 3, 300, 200))
    assert meta["image_size"] == list(out.anomaly_map.shape[-2:]) == [256, 256]


def test_onnx_opset_below_18_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """torch writes opset 18 and its down-conversion fails (a traceback, then opset 18 anyway, exit 0)."""
    checkpoint, _ = trained
    model = SsimAe.load_from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"opset_version=17 is not supported: .* opset 18 or later"):
        model.to_onnx(tmp_path / "onnx", opset_version=17)
    with pytest.raises(ValueError, match=r"opset_version=16 is not supported"):
        model.to_openvino(tmp_path / "openvino", onnx_kwargs={"opset_version": 16})
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "openvino").exists()


def test_ignored_export_options_are_named() -> None:
    hparams = {"image_size": [256, 256], "latent_dim": 100}
    anomalib = ["/venv/bin/anomalib", "export", "--model", "anomalib_ssimae.SsimAe", "--ckpt_path", "m.ckpt"]
    assert ignored_cli_model_arguments(hparams, [*anomalib, "--model.init_args.image_size", "512"]) == [
        "image_size=512 (checkpoint: [256, 256])"
    ]
    assert ignored_cli_model_arguments(hparams, [*anomalib, "--model.latent_dim=500"]) == [
        "latent_dim=500 (checkpoint: 100)"
    ]
    assert ignored_cli_model_arguments(hparams, [*anomalib, "--model.init_args.image_size", "[256, 256]"]) == []
    assert ignored_cli_model_arguments(hparams, ["/venv/bin/anomalib", "train", "--model.image_size", "512"]) == []


def test_fpr_below_the_stored_range_is_refused_after_export() -> None:
    meta = {
        "normalized": True,
        "image_threshold": 0.9,
        "image_min": 0.5,
        "image_max": 1.3,
        "image_cut": 0.5,
        "calibration": {"defect_free_images": 6, "image_fpr_quantiles": np.linspace(0.5, 1.1, 61).tolist()},
    }
    with pytest.raises(ValueError, match=r"image false-positive rate 1e-09 .*--image-fpr.* outside \[1e-06, 1\]"):
        normalized_cut(meta, "image", fpr=1e-9)
    # inside the range but below what 6 images resolve: used, and the record says so
    cut, info = normalized_cut(meta, "image", fpr=0.01)  # grid point 20 -> 0.5 + 0.6 * 20 / 60 = 0.7
    assert info["raw"] == pytest.approx(0.7)
    assert cut == pytest.approx(0.25)  # (0.7 - 0.9) / 0.8 + 0.5
    assert info["note"].startswith("image_fpr 0.01 is below what 6 defect-free calibration images resolve (1/6)")
    assert "note" not in normalized_cut(meta, "image", fpr=0.5)[1]


def test_enlarged_images_are_named_in_anomalib_predict(
    trained: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint, _ = trained
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(GOOD).convert("RGB").resize((64, 64)).save(folder / "small.png")  # 256 / 64: enlarged 4 times
    Image.open(GOOD).convert("RGB").resize((128, 200)).save(folder / "twice.png")  # 256 / 128 = 2: the limit
    with caplog.at_level(logging.WARNING):
        records, _ = predict(checkpoint, folder, tmp_path / "out")
    assert len(records) == 2
    warned = [r.getMessage() for r in caplog.records if "enlarged" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith(f"{folder / 'small.png'}: 64 x 64 (width x height) is enlarged 4 times")


@pytest.mark.slow
def test_enlarged_images_are_named_by_the_openvino_detector(
    trained: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint, _ = trained
    xml = SsimAe.load_from_checkpoint(checkpoint).to_openvino(tmp_path / "export")
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(GOOD).convert("L").resize((40, 100)).save(folder / "small.png")  # 256 / 40 = 6.4
    Image.open(GOOD).convert("L").save(folder / "full.png")  # 512 x 208: 1.23
    detector = OpenVinoDetector(xml)
    assert detector.image_size == [256, 256]
    with caplog.at_level(logging.WARNING):
        predict_folder(detector, folder, tmp_path / "out")
        detector(np.zeros((1, 3, 100, 100), dtype=np.float32))  # arrays without names: named by position
    warned = [r.getMessage() for r in caplog.records if "enlarged" in r.getMessage()]
    advice = (
        "to the model's image_size 256 x 256; more than 2 times gives unreliable scores: use images of the "
        "training resolution (crop or tile large ones, do not enlarge small ones)"
    )
    assert warned == [
        f"{folder / 'small.png'}: 40 x 100 (width x height) is enlarged 6.4 times {advice}",
        f"input[0]: 100 x 100 (width x height) is enlarged 2.56 times {advice}",
    ]


def anomalib_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "default", "COLUMNS": "200"}
    command = [str(Path(sys.executable).parent / "anomalib"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_anomalib_export_names_ignored_options_and_refuses_old_opsets(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, _ = trained
    common = ["export", "--model", "anomalib_ssimae.SsimAe", "--ckpt_path", str(checkpoint)]
    result = anomalib_cli(
        *common,
        "--model.init_args.image_size",
        "512",
        "--export_type",
        "torch",
        "--default_root_dir",
        "a",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "ignores image_size=512 (checkpoint: [256, 256])" in " ".join(output.split())
    meta = json.loads((tmp_path / "a" / "weights" / "torch" / "calibration.json").read_text())
    assert meta["image_size"] == [256, 256]

    result = anomalib_cli(
        *common,
        "--export_type",
        "onnx",
        "--onnx_kwargs",
        '{"opset_version": 17}',
        "--default_root_dir",
        "b",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "opset_version=17 is not supported" in " ".join((result.stdout + result.stderr).split())
    assert not (tmp_path / "b" / "weights").exists()


@pytest.mark.slow
def test_calibration_of_another_export_or_a_damaged_graph_is_refused(
    trained: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """model.xml of one export beside calibration.json of another was accepted: with --image-threshold 0.85 the cut
    became 0.49 instead of 0.99 and labels flipped. calibration.json now holds the SHA-256 of the graph's files."""
    checkpoint, _ = trained
    model = SsimAe.load_from_checkpoint(checkpoint)
    first = model.to_openvino(tmp_path / "first")
    meta = json.loads((first.parent / "calibration.json").read_text())
    assert set(meta["graph_sha256"]) == {"graph", "weights"}
    OpenVinoDetector(first)  # its own calibration: accepted
    model.post_processor._image_threshold.add_(0.1)  # a second export with other baked thresholds (a retrained model)
    second = model.to_openvino(tmp_path / "second")
    shutil.copy(first.parent / "calibration.json", second.parent / "calibration.json")
    with pytest.raises(ValueError, match=r"model\.(xml|bin) is not the file .*calibration.json was exported with"):
        OpenVinoDetector(second)
    # a truncated model.bin is named as such, not as an OpenVINO "Exception from core.cpp"
    weights = first.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model.bin is not the file .*truncated"):
        OpenVinoDetector(first)
    # a calibration.json written before fingerprints (0.3.0) is accepted with a warning
    del meta["graph_sha256"]
    (second.parent / "calibration.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        OpenVinoDetector(second)
    assert "has no fingerprint of its graph" in caplog.text


@pytest.mark.slow
def test_checkpoint_of_another_variant_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """`anomalib export --model SsimAeExtended` with an SsimAe checkpoint exported the SsimAe graph under the other
    name and exited 0; under another variant's configs torch listed mismatched keys. Both now name the class held."""
    from anomalib.deploy import ExportType

    from anomalib_ssimae import SsimAeExtended, SsimDae
    from anomalib_ssimae.models.ssim_ae.checkpoint import MODEL_CLASS

    checkpoint, _ = trained
    assert torch.load(checkpoint, weights_only=False)[MODEL_CLASS] == "SsimAe"
    with pytest.raises(
        ValueError, match=r"holds a SsimAe model, not a SsimAeExtended: use .*--model anomalib_ssimae\.SsimAe"
    ):
        Engine(default_root_dir=tmp_path, logger=False).export(
            SsimAeExtended(), ExportType.OPENVINO, export_root=tmp_path / "export", ckpt_path=checkpoint
        )
    assert not (tmp_path / "export").exists()
    # a 0.3.0 checkpoint does not name its class: its network and denoising settings tell it
    old = torch.load(checkpoint, weights_only=False)
    del old[MODEL_CLASS]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"holds a SsimAe model, not a SsimDae: .*configs/model/ssim_ae\.yaml"):
        SsimDae.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=False)
    assert type(SsimAe.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=False)) is SsimAe


@pytest.mark.slow
def test_anomalib_predict_records_an_unreadable_image_and_predicts_the_others(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """One truncated image refused the whole folder (the good ones got nothing) and left an empty .jsonl.partial
    and picture folder; now it gets a record with its error, as in ssimae-predict, and the others are predicted."""
    checkpoint, _ = trained
    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted((EMBEDDED / "test" / "pitting").glob("*.png"))[:3]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:500])
    model = SsimAe.load_from_checkpoint(checkpoint)
    root = tmp_path / "predict"
    Engine(default_root_dir=root, logger=False, accelerator="auto", devices=1).predict(model=model, data_path=folder)
    records = [json.loads(line) for line in next(root.rglob("predictions-*.jsonl")).read_text().splitlines()]
    assert len(records) == 4
    failed = [r for r in records if "error" in r]
    assert [Path(r["image"]).name for r in failed] == ["truncated.png"]
    assert "truncated.png" in failed[0]["error"]
    assert sorted(Path(r["image"]).name for r in records if "anomaly_score" in r) == [p.name for p in good]
    assert len([p for p in root.rglob("*.png") if p.is_file()]) == 3  # a picture per predicted image

    # nothing readable: refused before anything is written, no leftovers
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not an image")
    (bad / "b.png").write_bytes(b"")
    again = tmp_path / "again"
    with pytest.raises(ValueError, match=r"no image to predict can be read: .*a\.png.*\(and 1 more\)"):
        Engine(default_root_dir=again, logger=False, accelerator="auto", devices=1).predict(model=model, data_path=bad)
    assert not [p for p in again.rglob("*") if p.is_file() or p.name.startswith("predictions-")]


@pytest.mark.slow
def test_an_export_never_replaces_an_earlier_one(tmp_path: Path) -> None:
    """Two checkpoints exported with the same --default_root_dir: the second replaced the first's model and
    calibration.json without a word. Now it is refused, naming the file, and the first export stays as it was."""
    first = SsimAe(image_size=[128, 128]).eval().to_onnx(tmp_path)
    before = {p: p.read_bytes() for p in first.parent.iterdir()}
    with pytest.raises(FileExistsError, match=r"model\.onnx exists: this export would overwrite an earlier one"):
        SsimAe(image_size=[128, 128], latent_dim=10).eval().to_onnx(tmp_path)
    with pytest.raises(FileExistsError, match=r"calibration\.json exists"):
        SsimAe(image_size=[128, 128]).eval().to_onnx(tmp_path, model_file_name="other")
    assert {p: p.read_bytes() for p in first.parent.iterdir()} == before
