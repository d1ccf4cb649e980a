"""Training under Lightning's DDP strategy on CPU (2 processes, gloo), through anomalib's CLI, against the same
run in one process (issue 10). ``crops_per_epoch`` counts the crops of all processes: each process takes half of
the optimiser steps on its half of the images, and a step averages the gradients of 2 x ``batch_size`` crops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .helpers import CHECKPOINT, DATASETS, QUICKSTART, REPO, anomalib, config_args, metrics

pytestmark = [pytest.mark.slow, pytest.mark.cli]

CROPS, BATCH, EPOCHS = 2048, 16, 2
ARGS = [
    *config_args(*QUICKSTART, REPO / "configs" / "defect_free_thresholds.yaml"),
    *("--data.root", str(DATASETS), "--data.num_workers", "0", "--trainer.max_epochs", str(EPOCHS)),
    *("--model.crops_per_epoch", str(CROPS), "--model.batch_size", str(BATCH)),
]
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]  # gloo: CPU processes


def train(folder: Path, *args: str) -> tuple[dict[str, float], dict]:
    """Test metrics and checkpoint of a short quickstart training in ``folder``."""
    folder.mkdir()
    results = metrics(anomalib("train", *ARGS, *args, cwd=folder))
    return results, torch.load(folder / CHECKPOINT, weights_only=True)


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path: Path) -> None:
    # this short a training is seed-dominated (AUPRO 0.59-0.74 over one-process seeds on the EPYC, 2026-11-30; on
    # the AMX Xeon, 2026-12-01, seeds 42 and 43 gave 0.758 and 0.767 and DDP 0.636), so the DDP run is held to the
    # range of two one-process seeds, widened by 0.02 (pixel AUROC) and 0.15 (AUPRO)
    singles = [train(tmp_path / f"single{seed}", "--model.seed", str(seed)) for seed in (42, 43)]
    ddp, checkpoint = train(tmp_path / "ddp", *DDP)

    assert [c["global_step"] for _, c in singles] == [EPOCHS * CROPS // BATCH] * 2
    assert checkpoint["global_step"] == EPOCHS * CROPS // (2 * BATCH)  # 2 processes: the same crops in all
    # the defect-free thresholds come from the validation images of both processes: 6 good ones, 3 + 3
    assert int(checkpoint["state_dict"]["post_processor.calibration_images"]) == 6
    for name, margin in (("pixel_AUROC", 0.02), ("pixel_AUPRO", 0.15)):
        low, high = sorted(results[name] for results, _ in singles)
        assert low - margin <= ddp[name] <= high + margin, (name, [r for r, _ in singles], ddp)
