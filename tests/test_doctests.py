"""The ``Example:`` blocks of the package's docstrings run as doctests (values, not only "it runs")."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "anomalib_ssimae.components.schedule",
    "anomalib_ssimae.data.augmentation",
    "anomalib_ssimae.data.corruption",
    "anomalib_ssimae.data.masks",
    "anomalib_ssimae.fpr",
    "anomalib_ssimae.metrics",
    "anomalib_ssimae.models.ssim_ae.anomaly_map",
    "anomalib_ssimae.models.ssim_ae.frame_check",
    "anomalib_ssimae.models.ssim_ae.lightning_model",
    "anomalib_ssimae.models.ssim_ae.network",
    "anomalib_ssimae.records",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no Example"
    assert result.failed == 0
