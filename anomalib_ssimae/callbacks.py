"""Callbacks that tell the user where things are: logs when training starts, results when testing ends."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only


def _say(message: str) -> None:
    """Print to stdout, unwrapped, so paths can be copied (the CLI's log handler wraps long lines)."""
    print(f"[anomalib-ssimae] {message}", flush=True)  # noqa: T201


class RunSummary(Callback):
    """Print the TensorBoard/log directory when training starts and the output paths when testing ends."""

    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the log directories and the command that shows them."""
        del pl_module
        for log in trainer.loggers:
            log_dir = getattr(log, "log_dir", None) or getattr(log, "save_dir", None)
            if log_dir:
                kind = type(log).__name__
                _say(f"{kind} logs: {Path(log_dir).resolve()}  (view: tensorboard --logdir {Path(log_dir).resolve()})")
        if not trainer.loggers:
            _say("no logger configured: add trainer.logger to the config to keep loss curves")

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the result images, checkpoint and run directory."""
        del pl_module
        _say(f"run directory: {Path(trainer.default_root_dir).resolve()}")
        images = Path(trainer.default_root_dir) / "images"
        if images.is_dir():
            _say(f"result images ({sum(1 for _ in images.rglob('*.png'))} PNG): {images.resolve()}")
        checkpoint = trainer.ckpt_path or getattr(trainer.checkpoint_callback, "best_model_path", "")
        if checkpoint:
            _say(f"checkpoint: {Path(checkpoint).resolve()}")

    @rank_zero_only
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the prediction images."""
        del pl_module
        images = Path(trainer.default_root_dir) / "images"
        if images.is_dir():
            _say(f"prediction images ({sum(1 for _ in images.rglob('*.png'))} PNG): {images.resolve()}")
