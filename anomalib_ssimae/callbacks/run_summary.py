"""Where things are (:class:`RunSummary`), and :func:`say`, the package's way to tell the user something."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

logger = logging.getLogger(__name__)


def say(message: str) -> None:
    """Tell the user something: INFO on the package's logger. Under anomalib's CLI it appears twice, as anomalib
    configures logging: plain on stderr (paths can be copied from there) and through Rich on stdout."""
    logger.info(message)


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
                say(f"{kind} logs: {Path(log_dir).resolve()}  (view: tensorboard --logdir {Path(log_dir).resolve()})")
        if not trainer.loggers:
            say("no logger configured: add trainer.logger to the config to keep loss curves")

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name the result images, checkpoint and run directory."""
        say(f"run directory: {Path(trainer.default_root_dir).resolve()}")
        if hasattr(pl_module.visualizer, "test_dir"):  # ReconstructionVisualizer: this test's own folder
            images = pl_module.visualizer.test_dir
        else:  # another visualizer: anomalib's folder
            images = Path(trainer.default_root_dir) / "images"
        if images is not None and images.is_dir():
            say(f"result images ({sum(1 for _ in images.rglob('*.png'))} PNG): {images.resolve()}")
        own = pl_module.__dict__.pop("_tested_checkpoint", None)  # a resumed run tested its own weights
        checkpoint = own or trainer.ckpt_path or getattr(trainer.checkpoint_callback, "best_model_path", "")
        if checkpoint:
            say(f"checkpoint: {Path(checkpoint).resolve()}")

    @rank_zero_only
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Name this run's prediction pictures."""
        folder = getattr(pl_module.visualizer, "predict_dir", None)
        if folder is None:  # another visualizer: anomalib's folder
            folder = Path(trainer.default_root_dir) / "images"
        if folder.is_dir():
            count = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
            say(f"prediction images ({count}): {folder.resolve()}")
