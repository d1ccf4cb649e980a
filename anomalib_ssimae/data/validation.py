"""Check image files before training or testing, so that a bad file is named instead of failing deep in a worker.

anomalib 2.7 reads every image as 8-bit RGB: a truncated PNG fails inside a dataloader worker with
``OSError: image file is truncated`` and no file name, and a 16-bit image is clipped to a white image without
a warning (``shared/reference/anomalib-2.7.md`` §6).
"""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image

# Modes that anomalib's read_image (PIL convert("RGB") / 255) does not map to [0, 1] correctly.
UNSUPPORTED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def check_image_files(paths: Iterable[str]) -> int:
    """Open and decode every image; return how many were checked.

    Raises:
        ValueError: naming the first file that cannot be read (missing, empty, truncated, not an image) or that is
            stored with more than 8 bits per channel (anomalib would clip it to white).
    """
    count = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                mode = image.mode
                image.load()  # decodes the pixels: catches truncated files, which verify() lets through
        except (OSError, SyntaxError, ValueError) as error:
            msg = f"cannot read image {path}: {error}"
            raise ValueError(msg) from error
        if mode in UNSUPPORTED_MODES:
            msg = (f"image {path} has PIL mode {mode} (16-bit or float); anomalib reads 8-bit images and would clip "
                   "it to white. Convert it to 8 bits first, e.g. with PIL: image.point(lambda v: v / 256).convert('L')")
            raise ValueError(msg)
        count += 1
    return count
