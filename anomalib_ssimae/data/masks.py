"""Reading ground-truth masks: which pixels of a defective image are defective.

anomalib 2.7 reads a mask as ``PIL convert("L") > 0``. That is right for {0, 1}, {0, 255} and class-coded masks
(several grey levels, each a defect), but anti-aliased or JPEG edges add a ring of defect pixels, a palette mask whose
defect colour is dark (e.g. index 1 = (1, 0, 0)) or an RGBA mask drawn in the alpha channel reads as all background,
and a mask of another size than its image is stretched onto it. :func:`read_binary_mask` reads the raw values (palette
indices, the brightest channel, 16-bit values unclipped; the alpha channel if the colour is all black) and binarises:

- values in {0, v}: defect where > 0 ({0, 1}, {0, 255}, any single level);
- several levels, one of them covering a 3 x 3 area, or a connected region never reaching half the scale: class-coded
  levels, defect where > 0;
- other intermediate levels (anti-aliased or resized edges) and lossy files (JPEG, WebP): defect where >= half the
  scale (255 for 8-bit masks whose maximum exceeds 127, else the maximum), the clean mask's edge. A class level
  below half the scale only in thin lines touching a brighter region reads as an edge: binarise such masks first.

:func:`check_mask` runs it before training and testing and compares the size with the image's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import label, maximum, maximum_filter, minimum_filter

from anomalib_ssimae.data.images import decode

LOSSY_SUFFIXES = {".jpg", ".jpeg", ".webp"}


def mask_values(path: str | Path) -> np.ndarray:
    """The mask's values as a 2-D array: palette indices, the brightest colour channel, or the gray values (16-bit
    and float kept as they are); the alpha channel instead when the colour is black everywhere.

    Raises:
        ValueError: naming the file, if PIL cannot decode it.
    """
    image = decode(path, "mask")
    alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
    if image.mode in {"P", "PA"}:
        values = np.asarray(image.convert("P") if image.mode == "PA" else image)
    elif image.mode in {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        values = np.asarray(image.getchannel(0) if image.mode == "LA" else image)
    else:
        values = np.asarray(image.convert("RGB")).max(axis=2)
    if alpha is not None and values.max() == 0 and alpha.min() != alpha.max():
        values = alpha
    return values.astype(np.float32) if values.dtype == bool else values


def binarize_mask(values: np.ndarray, lossy: bool = False) -> np.ndarray:
    """Defect pixels of a mask given as values (see the module docstring for the rule).

    Example:
        >>> import numpy as np
        >>> clean = np.zeros((8, 8), np.uint8); clean[2:6, 2:6] = 255
        >>> smooth = clean.copy(); smooth[1, 2:6] = 64; smooth[2, 2:6] = 191  # an anti-aliased edge
        >>> bool((binarize_mask(smooth) == (clean > 0)).all()), int(binarize_mask(clean // 255).sum())
        (True, 16)
        >>> classes = np.zeros((8, 8), np.uint8); classes[:, 4:] = 60; classes[:, 7:] = 255  # two defect classes
        >>> int(binarize_mask(classes).sum())
        32
    """
    top = values.max()
    if top <= 0:
        return np.zeros(values.shape, dtype=bool)
    half = (255 if values.dtype == np.uint8 and top > 127 else top) / 2
    between = (values > 0) & (values < top)
    if not lossy and not between.any():
        return values > 0
    if not lossy:
        flat = between & (minimum_filter(values, size=3) == maximum_filter(values, size=3))
        components, count = label(values > 0, structure=np.ones((3, 3)))
        peaks = np.asarray(maximum(values, components, index=np.arange(1, count + 1)))
        if flat.any() or (peaks < half).any():  # a level with an area of its own, or a region without a core
            return values > 0
    return values >= half


def read_binary_mask(path: str | Path) -> np.ndarray:
    """``(H, W)`` bool: the defect pixels of the mask file ``path``.

    Raises:
        ValueError: naming the file, if PIL cannot decode it.
    """
    return binarize_mask(mask_values(path), lossy=Path(path).suffix.lower() in LOSSY_SUFFIXES)


def check_mask(mask_path: str | Path, image_path: str | Path) -> None:
    """Read the mask of ``image_path`` as training and testing will; warn if it marks no pixel or every pixel.

    Raises:
        ValueError: naming the files, if the mask cannot be read or its size differs from the image's.
    """
    mask = read_binary_mask(mask_path)
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:
        msg = f"cannot read image {image_path}: {error}"
        raise ValueError(msg) from error
    if mask.shape != (height, width):
        msg = (
            f"mask {mask_path} is {mask.shape[1]} x {mask.shape[0]} pixels but its image {image_path} is "
            f"{width} x {height}: anomalib would stretch the mask onto the image; save it at the image's size"
        )
        raise ValueError(msg)
    if not mask.any():
        warnings.warn(f"mask {mask_path} marks no defect pixel on the defective image {image_path}", stacklevel=2)
    elif mask.all():
        warnings.warn(f"mask {mask_path} marks every pixel of {image_path} as defective", stacklevel=2)
