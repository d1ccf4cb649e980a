"""Paths and loaders shared by the tests. Every test uses only data inside this repository (the embedded
``datasets/bsdata_pitting_mini``) or inputs it constructs, so the suite runs in a bare clone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from anomalib.data import MVTecAD
from PIL import Image

if TYPE_CHECKING:
    from anomalib_ssimae import SsimAe

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"  # data.root of configs/data/quickstart.yaml
EMBEDDED = DATASETS / "bsdata_pitting_mini"  # MVTec layout: 40 train/good, 12 test/good, 16 test/pitting (+ masks)
MODEL_CONFIGS = REPO / "configs" / "model"
DATA_CONFIGS = REPO / "configs" / "data"
QUICKSTART = [MODEL_CONFIGS / "ssim_ae.yaml", DATA_CONFIGS / "quickstart.yaml"]  # the README's main job


def config_args(*configs: Path) -> list[str]:
    """``--config a --config b ...`` for anomalib's CLI (later files merge into earlier ones)."""
    return [arg for config in configs for arg in ("--config", str(config))]


def load_image(path: Path, size: tuple[int, int] | None = None, mode: str = "RGB") -> torch.Tensor:
    """Image file -> (1, 3, H, W) float32 in [0, 1], converted to ``mode`` first (``"L"``: three equal channels);
    ``size`` is (height, width), bilinear."""
    image = Image.open(path).convert(mode)
    if size is not None:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def quickstart_datamodule(**kwargs: object) -> MVTecAD:
    """The embedded data with the split of configs/data/quickstart.yaml: 6 good + 8 pitting validation images."""
    options = {
        "val_split_mode": "from_test",
        "val_split_ratio": 0.5,
        "seed": 42,
        "num_workers": 0,
        "train_batch_size": 32,
        "eval_batch_size": 8,
    } | kwargs
    return MVTecAD(root=DATASETS, category="bsdata_pitting_mini", **options)


def fill_thresholds(model: SsimAe, pixel_threshold: float = 0.6, pixel_max: float = 1.5) -> SsimAe:
    """Set an untrained model's thresholds and normalisation range, so that labels and masks are exported."""
    for name, value in (
        ("_image_threshold", 0.9),
        ("_pixel_threshold", pixel_threshold),
        ("image_min", 0.5),
        ("image_max", 1.2),
        ("pixel_min", 0.0),
        ("pixel_max", pixel_max),
    ):
        getattr(model.post_processor, name).fill_(value)
    return model


RUN = Path("results") / "SsimAe" / "MVTecAD" / "bsdata_pitting_mini" / "v0"
CHECKPOINT = RUN / "weights" / "lightning" / "model.ckpt"


def anomalib(*args: str, cwd: Path) -> str:
    """Run the anomalib CLI, return its stdout; fail with its output if it fails."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    command = [str(Path(sys.executable).parent / "anomalib"), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, (
        f"anomalib {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def metrics(stdout: str) -> dict[str, float]:
    """The values of anomalib's test table."""
    table = stdout.rsplit("Test metric", 1)[-1]
    return {name: float(value) for name, value in re.findall(r"│\s*(\w+)\s*│\s*([-0-9.eE+]+)\s*│", table)}
