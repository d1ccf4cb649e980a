"""End to end through anomalib's CLI: train (fit + test) and test from the checkpoint, on real data.

mvtec_ad_grid_mini (25 train, 14 test images of MVTec AD grid) with 2 short epochs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from torchvision.transforms.v2 import Normalize, Resize

from anomalib_ssimae import SsimAe

from .conftest import REPO, SHARED_DATASETS

CONFIG = REPO / "configs" / "ssim_ae" / "mvtec_ad_grid_mini.yaml"
METRICS = {"image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Score"}
RECONSTRUCTION = {"reconstruction_SSIM", "reconstruction_MSE"}  # defect-free test images, Rádli & Czúni Table 5
SHORT = ["--trainer.max_epochs", "2", "--model.crops_per_epoch", "256", "--model.batch_size", "64"]


def anomalib(*args: str, cwd: Path) -> str:
    """Run the anomalib CLI, return its stdout; fail with its output if it fails."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    command = [str(Path(sys.executable).parent / "anomalib"), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
    assert result.returncode == 0, f"anomalib {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def metrics(stdout: str) -> dict[str, float]:
    """The values of anomalib's test table."""
    table = stdout.rsplit("Test metric", 1)[-1]
    return {name: float(value) for name, value in re.findall(r"│\s*(\w+)\s*│\s*([-0-9.eE+]+)\s*│", table)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run `anomalib train` once for the module; returns (working directory, stdout)."""
    work = tmp_path_factory.mktemp("cli")
    stdout = anomalib("train", "--config", str(CONFIG), "--data.root", str(SHARED_DATASETS), *SHORT, cwd=work)
    return work, stdout


@pytest.mark.cli
def test_train_prints_metrics_and_writes_outputs(trained: tuple[Path, str]) -> None:
    work, stdout = trained
    values = metrics(stdout)
    assert set(values) == METRICS | RECONSTRUCTION
    assert all(0.0 <= values[name] <= 1.0 for name in METRICS)
    assert 0.0 < values["reconstruction_SSIM"] < 1.0  # a real, imperfect reconstruction
    assert 0.0 < values["reconstruction_MSE"] < 255**2
    run = work / "results" / "SsimAe" / "MVTecAD" / "mvtec_ad_grid_mini" / "v0"
    checkpoint = run / "weights" / "lightning" / "model.ckpt"
    assert checkpoint.is_file()
    assert f"checkpoint: {checkpoint}" in stdout
    assert "TensorBoard" in stdout or "AnomalibTensorBoardLogger" in stdout
    # one result panel per test image
    datamodule = MVTecAD(root=SHARED_DATASETS, category="mvtec_ad_grid_mini", val_split_mode="from_test",
                         val_split_ratio=0.5, seed=42, num_workers=0)
    datamodule.setup()
    panels = sorted((run / "images").rglob("*.png"))
    assert len(panels) == len(datamodule.test_data)
    # panel = anomalib's 4 tiles of 256 px + the reconstruction
    from PIL import Image

    assert Image.open(panels[0]).size == (5 * 256, 256)


@pytest.mark.cli
def test_val_loss_is_logged_each_epoch(trained: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _ = trained
    (events,) = (work / "results" / "tensorboard" / "ssim_ae_mvtec_ad_grid_mini").glob("version_*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    val_loss = [event.value for event in accumulator.Scalars("val_loss")]
    assert len(val_loss) == 2  # one per epoch
    assert all(0 < v < 1 for v in val_loss)  # the SSIM loss (1 - SSIM) / 2 of a real reconstruction
    assert "val/image_and_reconstruction" in accumulator.Tags()["images"]


@pytest.mark.cli
def test_checkpoint_reload_and_cli_test_reproduce_metrics(trained: tuple[Path, str]) -> None:
    work, train_stdout = trained
    checkpoint = work / "results" / "SsimAe" / "MVTecAD" / "mvtec_ad_grid_mini" / "v0" / "weights" / "lightning" / "model.ckpt"
    model = SsimAe.load_from_checkpoint(checkpoint)  # AUPRO state in the checkpoint must not break this
    transforms = list(model.pre_processor.transform.transforms)
    assert [type(t) for t in transforms] == [Resize]
    assert list(transforms[0].size) == [256, 256]
    assert not any(isinstance(t, Normalize) for t in transforms)
    assert torch.isfinite(model.post_processor.image_threshold)

    stdout = anomalib("test", "--config", str(CONFIG), "--data.root", str(SHARED_DATASETS), "--ckpt_path",
                      str(checkpoint), cwd=work)
    tested, trained_values = metrics(stdout), metrics(train_stdout)
    assert set(tested) == METRICS | RECONSTRUCTION
    for name in METRICS | RECONSTRUCTION:
        assert abs(tested[name] - trained_values[name]) < 1e-5, name


@pytest.mark.cli
@pytest.mark.parametrize("folder", ["ssim_ae_extended", "ssim_dae", "ssim_dae_extended"])
def test_variant_trains_tests_and_visualises(folder: str, tmp_path: Path) -> None:
    config = REPO / "configs" / folder / "mvtec_ad_grid_mini.yaml"
    short = ["--trainer.max_epochs", "1", "--model.crops_per_epoch", "128", "--model.batch_size", "64"]
    stdout = anomalib("train", "--config", str(config), "--data.root", str(SHARED_DATASETS), *short, cwd=tmp_path)
    trained_values = metrics(stdout)
    assert set(trained_values) == METRICS | RECONSTRUCTION
    assert all(0.0 <= trained_values[name] <= 1.0 for name in METRICS)
    (run,) = (tmp_path / "results").glob("*/MVTecAD/mvtec_ad_grid_mini/v0")
    assert any((run / "images").rglob("*.png"))
    checkpoint = run / "weights" / "lightning" / "model.ckpt"
    tested = metrics(anomalib("test", "--config", str(config), "--data.root", str(SHARED_DATASETS),
                              "--ckpt_path", str(checkpoint), cwd=tmp_path))
    assert all(abs(tested[name] - trained_values[name]) < 1e-5 for name in METRICS)


@pytest.mark.cli
def test_same_command_gives_the_same_model(trained: tuple[Path, str], tmp_path: Path) -> None:
    """anomalib's CLI ignores seed_everything; the model's `seed` must make two runs identical."""
    work, _ = trained
    anomalib("train", "--config", str(CONFIG), "--data.root", str(SHARED_DATASETS), *SHORT, cwd=tmp_path)
    relative = Path("results/SsimAe/MVTecAD/mvtec_ad_grid_mini/v0/weights/lightning/model.ckpt")
    first = torch.load(work / relative, map_location="cpu", weights_only=False)["state_dict"]
    second = torch.load(tmp_path / relative, map_location="cpu", weights_only=False)["state_dict"]
    weights = [k for k in first if k.startswith("model.network.")]
    assert weights and all(torch.equal(first[k], second[k]) for k in weights)


@pytest.mark.cli
def test_defect_free_thresholds_from_yaml_and_predict_records(tmp_path: Path) -> None:
    """configs/defect_free_thresholds.yaml layered on a model config; `anomalib predict` on a folder writes one
    JSON-lines record and one picture per image, with the checkpoint's raw thresholds."""
    anomalib("train", "--config", str(CONFIG), "--config", str(REPO / "configs" / "defect_free_thresholds.yaml"),
             "--data.root", str(SHARED_DATASETS), *SHORT, cwd=tmp_path)
    checkpoint = tmp_path / "results" / "SsimAe" / "MVTecAD" / "mvtec_ad_grid_mini" / "v0" / "weights" / "lightning"
    checkpoint = checkpoint / "model.ckpt"
    model = SsimAe.load_from_checkpoint(checkpoint)
    assert type(model.post_processor).__name__ == "DefectFreePostProcessor"
    assert model.post_processor.image_fpr == 0.01
    folder = SHARED_DATASETS / "mvtec_ad_grid_mini" / "test" / "bent"
    stdout = anomalib("predict", "--config", str(CONFIG), "--ckpt_path", str(checkpoint), "--data", str(folder),
                      "--default_root_dir", str(tmp_path / "predict"), cwd=tmp_path)
    records_path = Path(re.search(r"prediction records \(JSON lines\): (\S+)", stdout).group(1))
    import json

    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == sorted(p.name for p in folder.glob("*.png"))
    # the CLI uses the checkpoint's calibrated post-processor: same normalised score as the reloaded model
    from anomalib.data.utils import read_image

    model.eval()
    for record in records:
        with torch.no_grad():
            expected = model(read_image(record["image"], as_tensor=True)[None]).pred_score.item()
        assert 0.0 <= record["anomaly_score"] <= 1.0
        assert record["anomaly_score"] == pytest.approx(expected, abs=1e-4)
    for record in records:
        assert Path(record["overlay"]).is_file()
        assert (record["width"], record["height"]) == (512, 512)  # original pixels (the model works at 256)
        assert record["threshold"]["pixel"]["raw"] == pytest.approx(float(model.post_processor.pixel_threshold))
        assert record["label"] == ("anomalous" if record["anomaly_score"] > 0.5 else "normal")
    # a second run never overwrites the first records file
    stdout = anomalib("predict", "--config", str(CONFIG), "--ckpt_path", str(checkpoint), "--data", str(folder),
                      "--default_root_dir", str(tmp_path / "predict"), cwd=tmp_path)
    second = Path(re.search(r"prediction records \(JSON lines\): (\S+)", stdout).group(1))
    assert second != records_path and records_path.is_file()
