"""Every shipped config builds its model and points at an existing dataset; model init arguments are validated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_ssimae import SsimAe

from .conftest import REPO, SHARED_DATASETS

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_one_config_per_shared_dataset() -> None:
    datasets = {p.name for p in SHARED_DATASETS.iterdir() if p.is_dir()}
    names = {p.stem for p in (REPO / "configs" / "ssim_ae").glob("*.yaml")}
    assert datasets <= names
    assert "quickstart" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_model_and_finds_data(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert config["model"]["class_path"] == "anomalib_ssimae.SsimAe"
    model = SsimAe(**config["model"]["init_args"], visualizer=False)
    data = config["data"]["init_args"]
    assert data["seed"] is not None  # a fixed split, so `anomalib test` sees the same images as `train`
    assert config["seed_everything"] is not None
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
