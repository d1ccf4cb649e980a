"""Training schedule: optimiser steps per image batch and the warm-up + cosine learning-rate factor.

Both count optimiser steps, which Lightning saves in checkpoints (``trainer.global_step``), so a resumed run
continues where it stopped.
"""

from __future__ import annotations

import math
import warnings

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Timer

LR_SCHEDULES = ("constant", "cosine")


def max_time_timer(trainer: Trainer) -> Timer | None:
    """The trainer's ``max_time`` timer (Lightning adds one when ``max_time`` is set), or ``None``."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)


def updates_for_images(images_before: int, batch_images: int, total_images: int, total_updates: int) -> int:
    """Optimiser steps for one image batch, in proportion to its images.

    Every training image then gives about the same number of crops per epoch (a short last batch gets fewer steps).

    Example:
        40 images in batches of 32 and 8, 20 steps per epoch:

        >>> updates_for_images(0, 32, 40, 20), updates_for_images(32, 8, 40, 20)
        (16, 4)
    """
    done = images_before * total_updates // total_images
    return (images_before + batch_images) * total_updates // total_images - done


def total_updates(crops_per_epoch: int, batch_size: int, max_steps: int | None, max_epochs: int | None) -> int:
    """Optimiser steps of the whole training: the smaller of ``max_steps`` and ``max_epochs`` x steps per epoch.

    Raises:
        ValueError: if neither limit is set (Lightning's ``-1``/``None`` mean unlimited).
    """
    per_epoch = math.ceil(crops_per_epoch / batch_size)
    limits = [limit for limit in (max_steps, max_epochs and max_epochs * per_epoch) if limit and limit > 0]
    if not limits:
        msg = "lr_schedule 'cosine' needs the training length: set trainer.max_epochs or trainer.max_steps"
        raise ValueError(msg)
    return min(limits)


def check_schedule(lr_schedule: str, lr_step_size: int | None, warmup_crops: int) -> None:
    """Reject schedule arguments that would fail only later in training.

    Raises:
        ValueError: naming the argument.
    """
    if lr_schedule not in LR_SCHEDULES:
        msg = f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}"
        raise ValueError(msg)
    if lr_step_size is not None and lr_step_size < 1:
        msg = f"lr_step_size must be None or at least 1, got {lr_step_size}"
        raise ValueError(msg)
    if lr_schedule == "cosine" and lr_step_size is not None:
        msg = "lr_schedule 'cosine' and lr_step_size (StepLR) exclude each other: set one"
        raise ValueError(msg)
    if warmup_crops < 0:
        msg = f"warmup_crops must be >= 0, got {warmup_crops}"
        raise ValueError(msg)


class WarmupCosine:
    """Learning-rate factor per optimiser step: linear warm-up, then cosine decay to 0.

    The warm-up lasts ``warmup`` steps; the decay ends at ``total`` steps, or earlier when ``time_fraction`` (the
    share of a time budget used) is further along than the share of steps done: the position is then
    ``time_fraction * total`` steps. On a machine fast enough to finish the steps within the time budget the steps
    are always further along, so the schedule does not depend on timing.

    Args:
        warmup: warm-up steps.
        total: steps at which the factor reaches 0 (at least ``warmup + 1``).

    Example:
        >>> schedule = WarmupCosine(10, 110)
        >>> schedule(0), schedule(9), schedule(60), schedule(110)
        (0.1, 1.0, 0.5, 0.0)
        >>> schedule(20, time_fraction=0.5) == schedule(55)
        True
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = warmup
        self.total = max(total, warmup + 1)

    def __call__(self, step: int, time_fraction: float = 0.0) -> float:
        """Factor in [0, 1] for optimiser step ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        position = max(step, time_fraction * self.total)
        progress = (position - self.warmup) / (self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class CosineLearningRate:
    """The learning rate of manual optimisation, set before every optimiser step: :class:`WarmupCosine` over the
    training's optimiser steps and, when ``trainer.max_time`` is set, over that time budget (whichever is further
    along), so a run cut short by the time cap still ends its decay instead of stopping at a high rate.

    Args:
        peak: learning rate after the warm-up.
        warmup_crops: warm-up length in training crops.
        batch_size: crops per optimiser step.
        crops_per_epoch: training crops per epoch.
    """

    def __init__(self, peak: float, warmup_crops: int, batch_size: int, crops_per_epoch: int) -> None:
        self.peak = peak
        self.warmup_crops = warmup_crops
        self.batch_size = batch_size
        self.crops_per_epoch = crops_per_epoch
        self.factor: WarmupCosine | None = None
        self.timer: Timer | None = None

    def start(self, trainer: Trainer) -> None:
        """Size the schedule from the trainer's limits (at fit start); warns when the warm-up is the whole run.

        Raises:
            ValueError: if the trainer sets neither ``max_steps`` nor ``max_epochs``.
        """
        warmup = math.ceil(self.warmup_crops / self.batch_size)
        total = total_updates(self.crops_per_epoch, self.batch_size, trainer.max_steps, trainer.max_epochs)
        self.factor = WarmupCosine(warmup, total)
        self.timer = max_time_timer(trainer)
        if warmup >= self.factor.total:
            warnings.warn(
                f"warmup_crops ({self.warmup_crops}) is as long as the whole training: the learning rate never "
                "reaches its peak",
                stacklevel=1,
            )

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set the rate of every parameter group for optimiser step ``step`` (``trainer.global_step``, so a resumed
        run continues the schedule)."""
        time_fraction = 0.0
        if self.timer is not None and self.timer.time_remaining() is not None:
            elapsed = self.timer.time_elapsed()
            time_fraction = elapsed / max(elapsed + self.timer.time_remaining(), 1e-9)
        for group in optimizer.param_groups:
            group["lr"] = self.peak * self.factor(step, time_fraction)
