"""Shared fixtures: real images from the embedded quickstart data (``tests/helpers.py`` holds paths and loaders).

The suite's trainings and predictions use ``accelerator="auto"``, as the configs do: a CUDA GPU where torch sees one,
else the CPU (issue 27: nothing may assume a CPU tensor). Only CPU-bound checks (bf16 on CPU flags, gloo DDP) force it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine

from anomalib_ssimae import SsimAe
from anomalib_ssimae.post_processing import DefectFreePostProcessor

from .helpers import EMBEDDED, load_image, quickstart_datamodule


def _first_training_image() -> Path:
    return min((EMBEDDED / "train" / "good").glob("*.png"))


@pytest.fixture(scope="session")
def gray_image() -> torch.Tensor:
    """A real defect-free BSData image converted to gray and resized (stretched) from 512 x 208 to 256 x 256:
    (1, 3, 256, 256), three equal channels, as a grayscale PNG is loaded by anomalib."""
    return load_image(_first_training_image(), (256, 256), mode="L")


@pytest.fixture(scope="session")
def pitting_image() -> torch.Tensor:
    """A real, non-square BSData image from the embedded data: (1, 3, 208, 512)."""
    return load_image(_first_training_image())


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, work folder) of a short in-process training with defect-free calibration: SsimAe at 256 x 256,
    128 crops, one epoch on the embedded data (quickstart split). Its weights are poor, but parity, calibration, output
    paths and quantisation are properties of the pipeline, not of the training. One training per test session."""
    work = tmp_path_factory.mktemp("deploy")
    model = SsimAe(
        crops_per_epoch=128, batch_size=64, post_processor=DefectFreePostProcessor(image_fpr=0.2, pixel_fpr=0.01)
    )
    engine = Engine(
        max_epochs=1, default_root_dir=work, logger=False, accelerator="auto", devices=1, enable_progress_bar=False
    )
    engine.fit(model, datamodule=quickstart_datamodule())
    return Path(engine.trainer.checkpoint_callback.best_model_path), work
