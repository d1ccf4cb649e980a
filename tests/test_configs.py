"""Every shipped config is generated, builds its model and points at an existing dataset; bad arguments are named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import anomalib_ssimae
from anomalib_ssimae import SsimAe

from .conftest import REPO, SHARED_DATASETS

FOLDERS = {"ssim_ae": "SsimAe", "ssim_ae_extended": "SsimAeExtended", "ssim_dae": "SsimDae",
           "ssim_dae_extended": "SsimDaeExtended"}
CONFIGS = sorted(p for folder in FOLDERS for p in (REPO / "configs" / folder).glob("*.yaml"))


def test_configs_match_their_generator() -> None:
    result = subprocess.run([sys.executable, str(REPO / "configs" / "generate.py"), "--check"],  # noqa: S603
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_one_config_per_model_and_shared_dataset() -> None:
    datasets = {p.name for p in SHARED_DATASETS.iterdir() if p.is_dir()}
    for folder in FOLDERS:
        names = {p.stem for p in (REPO / "configs" / folder).glob("*.yaml")}
        assert datasets <= names, folder
    assert (REPO / "configs" / "ssim_ae" / "quickstart.yaml").is_file()


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_builds_model_and_finds_data(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    class_name = FOLDERS[path.parent.name]
    assert config["model"]["class_path"] == f"anomalib_ssimae.{class_name}"
    model = getattr(anomalib_ssimae, class_name)(**config["model"]["init_args"], visualizer=False)
    assert model.hparams.denoising == ("dae" in path.parent.name)
    data = config["data"]["init_args"]
    assert data["seed"] is not None  # a fixed split, so `anomalib test` sees the same images as `train`
    assert config["model"]["init_args"]["seed"] is not None  # reproducible weights, data order and crops
    root = (REPO / data["root"]).resolve()
    train = root / data["category"] / "train" / "good"
    assert any(train.glob("*.png")), f"{path.name}: no training images in {train}"
    height, width = model.input_size
    assert min(height, width) >= config["model"]["init_args"]["patch_size"]


def test_bad_model_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="smaller than patch_size"):
        SsimAe(image_size=100)
    with pytest.raises(ValueError, match="residual must be one of"):
        SsimAe(residual="l1")
    with pytest.raises(ValueError, match="stride must be"):
        SsimAe(stride=0)
    with pytest.raises(ValueError, match="block_size must be"):
        anomalib_ssimae.SsimDae(block_size=200)
