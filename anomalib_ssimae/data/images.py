"""Reading image files: the one reader for training checks, ``ssimae-predict`` and prediction records.

anomalib 2.7 reads every image as 8-bit RGB (``PIL.Image.convert("RGB") / 255``): a truncated PNG fails inside a
dataloader worker with ``OSError: image file is truncated`` and no file name, and a 16-bit image is clipped to a
white image without a warning. :func:`read_rgb` reads exactly as anomalib does, but names the file and refuses
what anomalib would get wrong; :func:`check_image_files` runs it over a dataset before training or testing starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

# Modes that anomalib's read_image (PIL convert("RGB") / 255) does not map to [0, 1] correctly.
UNSUPPORTED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def decode(path: str | Path, what: str = "image") -> Image.Image:
    """Decode ``path`` fully (catches truncated files, which ``verify()`` lets through).

    Raises:
        ValueError: ``cannot read <what> <path>: ...`` if PIL cannot decode it.
    """
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        msg = f"cannot read {what} {path}: {error}"
        raise ValueError(msg) from error
    return image


def _open(path: str | Path) -> Image.Image:
    """:func:`decode` ``path`` and check its mode.

    Raises:
        ValueError: see :func:`read_rgb`.
    """
    image = decode(path)
    if image.mode in UNSUPPORTED_MODES:
        msg = (
            f"image {path} has PIL mode {image.mode} (16-bit or float); anomalib reads 8-bit images and would clip "
            "it to white. Convert it to 8 bits first, e.g. with PIL: image.point(lambda v: v / 256).convert('L')"
        )
        raise ValueError(msg)
    return image


def read_rgb(path: str | Path) -> tuple[np.ndarray, Image.Image]:
    """Read an image file as anomalib does.

    Gray, RGB, RGBA (alpha dropped) and palette files become RGB.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1], and the RGB PIL image.

    Raises:
        ValueError: naming the file, if PIL cannot decode it (missing, empty, truncated, not an image), or if it has
            16-bit or float pixels (anomalib's loader would clip those to white; convert them to 8 bits first).
    """
    rgb = _open(path).convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0, rgb


def check_image_files(paths: Iterable[str | Path]) -> int:
    """Decode every image and check its mode as :func:`read_rgb` does; return how many were checked.

    Raises:
        ValueError: naming the first file that cannot be read or has more than 8 bits per channel.
    """
    count = 0
    for path in paths:
        _open(path)
        count += 1
    return count


def dataset_image_paths(dataset: object) -> Iterable[str | Path]:
    """The image paths of an anomalib dataset: ``samples["image_path"]`` (MVTecAD, Folder, ...) or
    ``image_filenames`` (``PredictDataset``); empty when it has neither."""
    samples = getattr(dataset, "samples", None)
    if samples is not None and "image_path" in samples:
        return samples["image_path"]
    return getattr(dataset, "image_filenames", None) or []


def check_datamodule_images(datamodule: object, *splits: str) -> None:
    """Run :func:`check_image_files` on the images of the datamodule's given splits (e.g. ``"train_data"``)."""
    for split in splits:
        check_image_files(dataset_image_paths(getattr(datamodule, split, None)))


def is_hidden(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in a hidden file or folder below ``folder`` (a name starting with ``.``: macOS ``._*``
    AppleDouble files, ``.DS_Store``, ``.ipynb_checkpoints/``), or in a ``__MACOSX`` folder of an unpacked zip."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(folder).parts)


def find_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) under ``folder``, recursively, sorted; hidden ones skipped
    (:func:`is_hidden`).

    Raises:
        NotADirectoryError: if ``folder`` is not a folder.
        FileNotFoundError: if it holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"{folder}: not a folder"
        raise NotADirectoryError(msg)
    images = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p, folder)
    )
    if not images:
        msg = f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        raise FileNotFoundError(msg)
    return images
