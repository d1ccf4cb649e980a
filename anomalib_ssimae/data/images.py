"""Reading image files: the one reader for the datamodules, image checks, ``ssimae-predict`` and prediction records.

anomalib 2.7 reads every image as 8-bit RGB (``PIL.Image.convert("RGB") / 255``): a truncated PNG fails inside a
dataloader worker with ``OSError: image file is truncated`` and no file name, a 16-bit gray PNG or TIFF is clipped to
a white image and a float TIFF to black without a warning, and the alpha channel is dropped, so that transparent
areas show whatever colour lies under them. :func:`open_rgb` reads exactly as anomalib does, but names the file and
refuses what anomalib would get wrong. It is the one reader of ``ssimae-predict`` (:func:`read_rgb`) and of the
package's datamodules; :func:`check_image_files` runs it over a dataset before training, testing or ``anomalib
predict`` starts, since anomalib's own loaders cannot be changed.

Gray, RGB, palette, and opaque gray+alpha and RGBA images (8-bit; PNG, JPEG, TIFF ...) become RGB as PIL converts
them (gray to three equal channels). 16-bit RGB files are read at 8 bits (PIL keeps the high byte), not clipped.
Transparent pixels are refused rather than composited: anomalib's loaders, which ``anomalib predict`` and anomalib's
datamodules use, cannot be given a background, and a model must see at prediction what it saw in training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from anomalib_ssimae.records import MAX_UPSCALE, upscale_factor, warn_if_upscaled

# Modes that anomalib's read_image (PIL convert("RGB") / 255) does not map to [0, 1] correctly.
UNSUPPORTED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
logger = logging.getLogger(__name__)


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


def transparent_pixels(image: Image.Image) -> int:
    """How many pixels of ``image`` are not fully opaque: alpha < 255 in an alpha channel or by a transparency
    key (a PNG ``tRNS`` colour or palette entry)."""
    if not image.has_transparency_data:
        return 0
    return int(np.count_nonzero(np.asarray(image.convert("RGBA").getchannel("A")) < 255))


def _open(path: str | Path) -> Image.Image:
    """:func:`decode` ``path`` and check its mode and alpha.

    Raises:
        ValueError: see :func:`open_rgb`.
    """
    image = decode(path)
    if image.mode in UNSUPPORTED_MODES:
        fix = (
            "image.point(lambda v: v * 255).convert('L') for values in [0, 1]"
            if image.mode == "F"
            else "image.convert('I').point(lambda v: v / 256).convert('L') for 16-bit values"
        )
        msg = (
            f"image {path} has PIL mode {image.mode} (16-bit or float); anomalib reads 8-bit images and would clip "
            f"it to white or black. Convert it to 8 bits first, e.g. with PIL: {fix}"
        )
        raise ValueError(msg)
    if count := transparent_pixels(image):
        msg = (
            f"image {path} has transparent pixels ({count} of {image.width * image.height} with alpha < 255); "
            "anomalib drops the alpha and would use the colours under them. Flatten it onto the background you "
            "want first, e.g. with PIL: Image.alpha_composite(Image.new('RGBA', image.size, 'black'), "
            "image.convert('RGBA')).convert('RGB')"
        )
        raise ValueError(msg)
    return image


def open_rgb(path: str | Path) -> Image.Image:
    """Read an image file as anomalib does (PIL ``convert("RGB")``), after checking it.

    Raises:
        ValueError: naming the file, if PIL cannot decode it (missing, empty, truncated, not an image), if it has
            16-bit gray or float pixels (anomalib's loader would clip those; convert them to 8 bits first), or if
            any pixel is transparent (flatten it onto a background first).
    """
    return _open(path).convert("RGB")


def read_rgb(path: str | Path) -> tuple[np.ndarray, Image.Image]:
    """:func:`open_rgb` as ``(H, W, 3)`` float32 RGB in [0, 1], and the RGB PIL image.

    Raises:
        ValueError: see :func:`open_rgb`.
    """
    rgb = open_rgb(path)
    return np.asarray(rgb, dtype=np.float32) / 255.0, rgb


def check_image_files(paths: Iterable[str | Path], image_size: tuple[int, int] | Sequence[int] | None = None) -> int:
    """Decode every image and check it as :func:`open_rgb` does; return how many were checked.

    With ``image_size`` (height, width), warn once about the images that resizing to it enlarges more than
    :data:`~anomalib_ssimae.records.MAX_UPSCALE` times per side: how many, and the most enlarged one.

    Raises:
        ValueError: naming the first file that cannot be read, has 16-bit gray or float pixels or transparent ones.
    """
    count, enlarged = 0, []
    for path in paths:
        image = _open(path)
        count += 1
        size = (image.height, image.width)
        if (factor := upscale_factor(size, image_size)) > MAX_UPSCALE:
            enlarged.append((factor, count, path, size))
    if enlarged:  # one warning per dataset, not one per image: a folder of thumbnails would flood the log
        _, _, path, size = max(enlarged, key=lambda item: (item[0], -item[1]))
        warn_if_upscaled(path, size, image_size, count=len(enlarged))
    return count


def dataset_image_paths(dataset: object) -> Iterable[str | Path]:
    """The image paths of an anomalib dataset: ``samples["image_path"]`` (MVTecAD, Folder, ...) or
    ``image_filenames`` (``PredictDataset``); empty when it has neither."""
    samples = getattr(dataset, "samples", None)
    if samples is not None and "image_path" in samples:
        return samples["image_path"]
    return getattr(dataset, "image_filenames", None) or []


def check_datamodule_images(
    datamodule: object, *splits: str, image_size: tuple[int, int] | Sequence[int] | None = None
) -> None:
    """Run :func:`check_image_files` on the images of the datamodule's given splits (e.g. ``"train_data"``), warning
    once per split about images enlarged too much to ``image_size``: by default the ``input_size`` of the model that
    the datamodule's trainer runs (:class:`~anomalib_ssimae.callbacks.InputChecks` calls this at fit and test start)."""
    if image_size is None:
        model = getattr(getattr(datamodule, "trainer", None), "lightning_module", None)
        image_size = getattr(model, "input_size", None)
    for split in splits:
        check_image_files(dataset_image_paths(getattr(datamodule, split, None)), image_size)


def is_hidden(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in a hidden file or folder below ``folder`` (a name starting with ``.``: macOS ``._*``
    AppleDouble files, ``.DS_Store``, ``.ipynb_checkpoints/``), or in a ``__MACOSX`` folder of an unpacked zip."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(folder).parts)


def note_skipped(log: logging.Logger, skipped: Sequence[Path], root: Path | str, what: str) -> None:
    """Log one note for the files skipped under ``root``: how many, and up to five of them (none: no note)."""
    if skipped:
        examples = ", ".join(str(p) for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        log.info("skipped %d %s files under %s: %s", len(skipped), what, root, examples)


def find_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) under ``folder``, recursively, sorted; hidden ones
    (:func:`is_hidden`) and other files skipped, with a note.

    Raises:
        NotADirectoryError: if ``folder`` is not a folder.
        FileNotFoundError: if it holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"{folder}: not a folder"
        raise NotADirectoryError(msg)
    images, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        skip = is_hidden(path, folder) or path.suffix.lower() not in IMAGE_SUFFIXES
        (skipped if skip else images).append(path)
    if not images:
        msg = f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        raise FileNotFoundError(msg)
    note_skipped(logger, skipped, folder, "hidden or non-image")
    return images


def skip_hidden_files(dataset: object) -> None:
    """Drop hidden files (:func:`is_hidden`) from an anomalib ``PredictDataset``'s ``image_filenames``, with a note.

    ``anomalib predict --data FOLDER`` lists them too: a macOS ``._a.png`` fails to decode and a
    ``.ipynb_checkpoints/`` copy is scored as another image. The dataset keeps the resolved files but not the path
    it was given, so hidden means below the files' common folder: a single file is always kept, and so are the
    images of a folder that itself lies in a hidden one (``~/.cache/images``).

    Raises:
        ValueError: if every file is hidden.
    """
    paths = getattr(dataset, "image_filenames", None)
    if not paths or len(paths) < 2:
        return
    root = Path(os.path.commonpath(paths))
    hidden = [is_hidden(Path(p), root) for p in paths]
    skipped = [Path(p) for p, h in zip(paths, hidden, strict=True) if h]
    if len(skipped) == len(paths):
        msg = f"{root}: only hidden files to predict (e.g. {skipped[0]})"
        raise ValueError(msg)
    dataset.image_filenames = [p for p, h in zip(paths, hidden, strict=True) if not h]
    note_skipped(logger, skipped, root, "hidden")


def skip_unreadable_files(dataset: object) -> list[tuple[Path, str]]:
    """Drop the files :func:`open_rgb` refuses (undecodable, truncated, 16-bit gray, float, transparent) from an
    anomalib ``PredictDataset``'s ``image_filenames``, so that ``anomalib predict`` scores the others; returns
    ``(file, error)`` for each dropped one, to be recorded with its error. anomalib's loader stopped the whole
    folder at the first such file.

    Raises:
        ValueError: if no file is left, with the first file's error.
    """
    paths = getattr(dataset, "image_filenames", None)
    if not paths:
        return []
    kept, failed = [], []
    for path in paths:
        try:
            _open(path).close()
        except ValueError as error:
            failed.append((Path(path), str(error)))
        else:
            kept.append(path)
    if failed and not kept:
        msg = f"no image to predict can be read: {failed[0][1]}" + (
            f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        )
        raise ValueError(msg)
    if failed:
        dataset.image_filenames = kept
        logger.warning(
            "skipped %d unreadable image(s), recorded with their error; the first: %s", len(failed), failed[0][1]
        )
    return failed
