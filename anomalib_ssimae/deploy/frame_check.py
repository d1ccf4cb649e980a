"""The frame check of an exported model, recomputed with NumPy for the reason in a prediction record.

The exported graph already scores an out-of-distribution frame 1.0 and labels it anomalous
(:class:`~anomalib_ssimae.models.ssim_ae.frame_check.FrameCheck` is part of it); its outputs cannot say why. From
the ``frame_check`` entry of ``calibration.json`` (training histograms, limit), :func:`frame_distances` repeats the
check on the input images: resize to ``image_size`` (bilinear, no antialiasing, as the graph), the network's channels
(ITU-R 601 luma for gray models) and per-image standardisation where the model uses it, then the distance of each
image's intensity histogram to the nearest training histogram. NumPy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(B, C, H, W)`` -> ``(B, C, h, w)``, bilinear with half-pixel centres and no antialiasing (torch's
    ``interpolate(..., mode="bilinear", align_corners=False, antialias=False)``)."""
    height, width = images.shape[-2:]

    def axis(out: int, size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.clip((np.arange(out, dtype=np.float64) + 0.5) * size_in / out - 0.5, 0, size_in - 1)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, (source - low).astype(np.float32)

    top, bottom, dy = axis(size[0], height)
    left, right, dx = axis(size[1], width)
    rows = images[..., top, :] * (1 - dy)[:, None] + images[..., bottom, :] * dy[:, None]
    return rows[..., left] * (1 - dx) + rows[..., right] * dx


def frame_distances(images: np.ndarray, check: dict[str, Any], image_size: list[int] | None) -> np.ndarray:
    """Distances ``(B,)`` in [0, 2] of images ``(B, 3, H, W)`` float32 in [0, 1] to the nearest training histogram
    of ``check`` (``calibration.json``'s ``frame_check``: ``memory``, ``bins``, ``samples``, ``channels``,
    ``standardize``); compare with ``check["limit"]``."""
    inputs = np.asarray(images, dtype=np.float32)
    if image_size:
        inputs = resize_bilinear(inputs, (int(image_size[0]), int(image_size[1])))
    if check["channels"] == 1 and inputs.shape[1] == 3:
        inputs = np.einsum("bchw,c->bhw", inputs, LUMA)[:, None]
    if check.get("standardize"):
        mean = inputs.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(np.sqrt(((inputs - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)), 1 / 255)
        inputs = np.clip((inputs - mean) / std * 0.15 + 0.5, 0, 1)
    bins, samples = int(check["bins"]), int(check["samples"])
    step_h, step_w = max(1, inputs.shape[-2] // samples), max(1, inputs.shape[-1] // samples)
    pixels = np.clip(inputs[..., ::step_h, ::step_w], 0, 1).reshape(*inputs.shape[:2], -1)
    index = np.minimum(np.floor(pixels * bins), bins - 1).astype(np.int64)
    counts = np.stack([np.stack([np.bincount(c, minlength=bins) for c in image]) for image in index])
    histograms = counts / pixels.shape[-1]
    memory = np.asarray(check["memory"], dtype=np.float64)
    return np.abs(histograms[:, None] - memory[None]).sum(axis=-1).mean(axis=-1).min(axis=1)
