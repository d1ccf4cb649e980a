"""Datasets the tests build in ``tmp_path`` from the embedded BSData images and their real masks (MVTec AD layout or
anomalib Folder layout), shared by the data-folder and image-input tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from anomalib_ssimae.data import Folder, MVTecAD

from .helpers import EMBEDDED

TRAIN = sorted((EMBEDDED / "train" / "good").glob("*.png"))
GOOD = sorted((EMBEDDED / "test" / "good").glob("*.png"))
PITTING = sorted((EMBEDDED / "test" / "pitting").glob("*.png"))
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)  # a macOS ._ file: not a PNG


def mask_of(image: Path) -> Path:
    return EMBEDDED / "ground_truth" / "pitting" / f"{image.stem}_mask.png"


def clean_mask(image: Path) -> np.ndarray:
    """The real mask of an embedded pitting image, (208, 512) bool."""
    return np.asarray(Image.open(mask_of(image))) > 0


def mvtec(root: Path, n_train: int = 4, n_good: int = 2, pitting: list[Path] = PITTING[:3]) -> Path:
    """``root/part`` in the MVTec AD layout with the embedded images and masks."""
    category = root / "part"
    for folder in ("train/good", "test/good", "test/pitting", "ground_truth/pitting"):
        (category / folder).mkdir(parents=True)
    for image in TRAIN[:n_train]:
        shutil.copy(image, category / "train" / "good" / image.name)
    for image in GOOD[:n_good]:
        shutil.copy(image, category / "test" / "good" / image.name)
    for image in pitting:
        shutil.copy(image, category / "test" / "pitting" / image.name)
        shutil.copy(mask_of(image), category / "ground_truth" / "pitting" / mask_of(image).name)
    return category


def setup_mvtec(root: Path) -> MVTecAD:
    data = MVTecAD(root=root, category="part", num_workers=0, val_split_mode="none", seed=0)
    data.setup()
    return data


def setup_folder(root: Path, **folders: str | list[str]) -> Folder:
    data = Folder(name="part", root=root, num_workers=0, val_split_mode="none", seed=0, **folders)
    data.setup()
    return data


def masks_by_image(dataset: object) -> dict[str, np.ndarray]:
    """``image name -> gt_mask`` of the defective samples, read as training and testing read them."""
    items = (dataset[i] for i in range(len(dataset)))
    return {Path(item.image_path).name: item.gt_mask.numpy().astype(bool) for item in items if item.gt_label == 1}
