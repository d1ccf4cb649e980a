"""False-positive-rate grid and interpolation, with NumPy alone: shared by training
(:mod:`anomalib_ssimae.post_processing`) and prediction with an exported model (:mod:`anomalib_ssimae.deploy`), which
must not import torch.

:data:`FPR_GRID` holds the rates at which the defect-free quantiles are stored (in checkpoints and in
``calibration.json``); :func:`interpolate_fpr` reads a raw threshold off such a table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_FPR = 1e-6  # the smallest false-positive rate the stored quantiles (FPR_GRID) cover


def _log_grid(start: float = 0.0, end: float = -6.0, steps: int = 61) -> np.ndarray:
    """``10 ** x`` for ``x`` from ``start`` to ``end`` in ``steps`` points, float64 ``(steps,)``, bit for bit as
    ``torch.logspace(start, end, steps, dtype=torch.float64)`` computes it (exponents counted from the nearer end,
    ``math.pow``; NumPy's ``logspace`` differs in the last bit of 17 of the 61 values), so that checkpoints and
    ``calibration.json`` keep the grid they were written with."""
    step = (end - start) / (steps - 1)
    exponents = [start + i * step if i < steps // 2 else end - (steps - 1 - i) * step for i in range(steps)]
    return np.array([math.pow(10.0, exponent) for exponent in exponents], dtype=np.float64)


FPR_GRID = _log_grid()  # float64 (61,): 1, 0.794, ..., 1e-6, ten points per decade; read-only
FPR_GRID.flags.writeable = False


def interpolate_fpr(quantiles: Any, fpr: float) -> float:
    """Raw threshold for a false-positive rate ``fpr`` in [:data:`MIN_FPR`, 1] from quantiles on :data:`FPR_GRID`.

    ``quantiles``: ``(61,)`` raw thresholds (units of the model's raw score or map), as a list, NumPy array or torch
    tensor (converted without importing torch). The rate is interpolated linearly in ``log10(fpr)``.

    Raises:
        ValueError: ``fpr`` outside [1e-6, 1] (the table says nothing below 1e-6).

    Example:
        >>> interpolate_fpr([100.0] + [99.0] * 60, 1.0)
        100.0
    """
    if not MIN_FPR <= fpr <= 1:
        msg = f"a false-positive rate must be in [{MIN_FPR:g}, 1] (the range of the stored quantiles), got {fpr:g}"
        raise ValueError(msg)
    grid = np.log10(FPR_GRID)[::-1]  # increasing: -6 ... 0
    if hasattr(quantiles, "detach"):  # a torch tensor, possibly on a GPU
        quantiles = quantiles.detach().cpu().numpy()
    values = np.asarray(quantiles, dtype=np.float64)[::-1]
    return float(np.interp(np.log10(fpr), grid, values))
