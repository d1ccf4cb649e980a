"""Training guards (:class:`TrainingGuards`): stop a training that cannot end well between optimiser steps, say why
and which checkpoint stays; log the gradient norm. The collapse checks of training and validation live here.

The models train with manual optimisation, up to an epoch of optimiser steps per image batch, and Lightning acts on
``max_time``, ``max_steps`` and SIGTERM only after a training batch. So the guards act between optimiser steps:

- :meth:`TrainingGuards.stop_between_steps`, called by the training step before each optimiser step: ``max_time``
  or ``max_steps`` reached (sets ``trainer.should_stop``: Lightning then validates before stopping, so
  ``EarlyStopping`` finds ``val_loss``), SIGTERM (exits with status 1);
- ``on_before_backward`` (in ``manual_backward``): a non-finite loss raises :class:`FloatingPointError` before the
  backward pass, so the step never writes NaN into the weights;
- :meth:`TrainingGuards.check_collapse`, called by the training step after the backward pass: keeps the global
  gradient norm as the model's ``grad_norm`` (computed once a step; it jumps when training diverges,
  ``benchmarks/results/collapse.md``; under DDP the gradients are all-reduced already) and raises
  :class:`FloatingPointError` when training collapsed (:data:`SATURATED_STEPS`);
- :meth:`TrainingGuards.log_grad_norm`, called by the training step after the optimiser step, logs ``grad_norm``.

Under DDP all processes agree before any stops (:func:`agree`), or the others would wait in the next all-reduce.
Validation warns when its reconstructions are uniform images (:func:`warn_if_uniform`, called by
:class:`~anomalib_ssimae.callbacks.ValidationMonitor`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer

from anomalib_ssimae.components.schedule import max_time_timer

logger = logging.getLogger(__name__)

SATURATED_STEPS = 50  # optimiser steps with a blank, saturated reconstruction before training counts as collapsed
SATURATION = 1e-3
NO_GRADIENT = 1e-6  # a global gradient norm below this is none at all (healthy runs: 0.02-3, collapse.md, stability.md)
UNIFORM_AFTER_STEPS = 300  # validation warns about uniform reconstructions from this optimiser step on


def last_checkpoint(trainer: Any) -> str:
    """The newest checkpoint file this run's ModelCheckpoint wrote (``""``: none yet)."""
    callback = trainer.checkpoint_callback
    return getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")


def kept_checkpoint(trainer: Any) -> str:
    """The end of a guard's message: which checkpoint stays."""
    last = last_checkpoint(trainer)
    return f"the last checkpoint, {last}, is kept" if last else "no checkpoint was written yet"


def agree(trainer: Trainer, decision: bool, require_all: bool) -> bool:
    """Under DDP, the decision of all processes (``require_all``: every one's, else any one's), so that they stop
    together; in one process, ``decision``."""
    if trainer.world_size > 1:
        return trainer.strategy.reduce_boolean_decision(decision, all=require_all)
    return decision


def time_is_up(timer: Timer | None) -> bool:
    """Whether ``timer`` (:func:`~anomalib_ssimae.components.schedule.max_time_timer`) has run out. Lightning checks it
    only after a training batch, and one image batch here can hold hundreds of optimiser steps (several minutes), so
    the training step checks it between steps."""
    remaining = timer.time_remaining() if timer is not None else None
    return remaining is not None and remaining <= 0


def steps_are_up(trainer: Trainer) -> bool:
    """Whether ``trainer.max_steps`` (``-1``: no limit) has been reached. Like ``max_time``, Lightning checks it only
    after a training batch, which here can hold a whole epoch of optimiser steps: ``max_steps: 3789`` ran 4375."""
    return trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step


def stop_if_terminated(trainer: Trainer) -> None:
    """Leave at once on SIGTERM (a scheduler, ``docker stop``, ``kill``), with a non-zero exit status.

    Lightning notes the signal but acts on it only after a training batch, which here holds up to an epoch of
    optimiser steps: a run went on for minutes, past the scheduler's grace period, and then exited with status
    0 (``SIGTERMException`` is a bare ``SystemExit``), as if it had finished. Any process's signal stops all.

    Raises:
        SystemExit: with the step and the checkpoint that stays (exit status 1).
    """
    if agree(trainer, bool(getattr(trainer, "received_sigterm", False)), require_all=False):
        msg = (
            f"training stopped by SIGTERM at optimiser step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}); {kept_checkpoint(trainer)}"
        )
        raise SystemExit(msg)


def stop_non_finite(trainer: Trainer, loss: torch.Tensor) -> None:
    """Raise :class:`FloatingPointError` naming the step and the checkpoint that stays (issue 10)."""
    msg = (
        f"training loss is {loss.item()} at optimiser step {trainer.global_step} (epoch "
        f"{trainer.current_epoch}); training stopped before the weights were updated, and "
        f"{kept_checkpoint(trainer)}. "
        "Lower learning_rate, or use train_precision: 32-true if bf16 overflows"
    )
    raise FloatingPointError(msg)


def saturated(reconstruction: torch.Tensor) -> bool:
    """Whether every pixel of the reconstruction ``(B, C, H, W)`` is at an end of the output sigmoid (above
    ``1 - SATURATION`` or below :data:`SATURATION`) and it is the same image for every crop (of its pixels, for one
    crop), a colour one too: hazelnut_toy's SSIM-AEe output red and blue at 1, green at 0."""
    output = reconstruction.float()  # in fp32: in bf16, 1 - 1e-3 rounds to 1.0
    if not bool(((output < SATURATION) | (output > 1 - SATURATION)).all()):
        return False
    spread = output.amax(0) - output.amin(0) if len(output) > 1 else output.amax() - output.amin()
    return float(spread.max()) < SATURATION


def gradient_norm(module: torch.nn.Module) -> torch.Tensor:
    """The global L2 norm of the gradients on ``module``'s weights (a scalar tensor; 0 when none has a gradient)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def no_gradient(norm: torch.Tensor) -> bool:
    """Whether a global gradient norm (:func:`gradient_norm`) is none at all: below :data:`NO_GRADIENT`.

    A collapsed network whose output sigmoid is saturated at every pixel passes none (in bf16 exactly 0), whether or
    not its output is the same image for every crop: SSIM-AEe on hazelnut_toy (bf16, peak learning rate 1e-3, seeds
    42 and 43, ``benchmarks/quality/stability.py``) output input-dependent saturated images with a gradient norm of
    exactly 0 from step ~420 on, and :func:`saturated` never saw it.
    """
    return float(norm) < NO_GRADIENT


def warn_if_uniform(trainer: Trainer, inputs: torch.Tensor, reconstruction: torch.Tensor) -> None:
    """Validation: log a warning when the reconstructions ``(B, C, H, W)`` of inputs that are not flat are uniform
    images (collapse), from optimiser step :data:`UNIFORM_AFTER_STEPS` on."""
    uniform = reconstruction.float().std(dim=(1, 2, 3)).max() < 1e-3 < inputs.float().std(dim=(1, 2, 3)).max()
    if uniform and trainer.global_step >= UNIFORM_AFTER_STEPS:
        logger.warning(
            "Epoch %d, step %d: the reconstructions are uniform images (collapse); check the learning rate and data.",
            trainer.current_epoch,
            trainer.global_step,
        )


class TrainingGuards(Callback):
    """Stop a training that hit its limits, was terminated, diverged or collapsed between optimiser steps; log
    ``grad_norm`` (see the module docstring). The model keeps one (``SsimAe.guards``) and adds it to every run."""

    def __init__(self) -> None:
        self.timer: Timer | None = None  # the max_time timer, set at fit start (one process only)
        self.saturated_steps = 0  # consecutive optimiser steps with a blank, saturated reconstruction (collapse)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Find the ``max_time`` timer; under DDP, Lightning's check after the batch keeps processes in step."""
        del pl_module
        self.timer = max_time_timer(trainer) if trainer.world_size == 1 else None

    def stop_between_steps(self, trainer: Trainer) -> bool:
        """Before an optimiser step: ``True`` (and ``trainer.should_stop`` set, as ``max_time``'s Timer does) when
        ``max_time`` or ``max_steps`` is reached; exits on SIGTERM (:func:`stop_if_terminated`)."""
        if time_is_up(self.timer) or steps_are_up(trainer):
            trainer.should_stop = True
            return True
        stop_if_terminated(trainer)
        return False

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        """Stop before a non-finite loss reaches the weights (:func:`stop_non_finite`)."""
        del pl_module
        if not agree(trainer, bool(torch.isfinite(loss)), require_all=True):
            stop_non_finite(trainer, loss)

    def check_collapse(self, trainer: Trainer, crops: torch.Tensor, reconstruction: torch.Tensor) -> None:
        """Stop when, for crops that are not flat, the reconstruction has been one image at the ends of the output
        sigmoid, the same for every crop (:func:`saturated`), or no gradient has reached the weights
        (:func:`no_gradient`), for :data:`SATURATED_STEPS` steps in a row: training collapsed.

        Then (almost) no gradient passes the sigmoid, the network returns a white (or black) image for good, and
        going on would spend the whole budget on a model that scores at chance. Measured with the SSIM loss on
        binarised images (DeepPCB, ``benchmarks/studies/collapse.py``): the latent exploded from about 2 to above 700
        within 25 steps, after 100-225 steps, at peak learning rates 2e-4 (fp32) and 1e-3 (bf16); the L2 loss
        trained. Also seen on grey-level images: SSIM-AEe (seed 43) and SSIM-DAEe (seed 44) on magnetic_tile, bf16 at
        1e-3 (AMX Xeon): the reconstruction stayed nearly flat for 300 steps, then the latent exploded; for the
        first, fp32 or 5e-4 trained. And on colour images: SSIM-AEe and SSIM-DAEe on hazelnut_toy (bf16, 1e-3, seeds
        42 and 43, EPYC and Xeon) went at step ~420 to a fixed image of saturated colour channels, which the first
        version of this guard (one constant) missed. A network at initialisation outputs 0.5 everywhere and one that
        reconstructs black-and-white images has both ends, but not the same image for every crop: neither counts.
        All processes of a DDP run agree before anyone stops.

        Raises:
            FloatingPointError: naming the step, the checkpoint that stays and the remedies.
        """
        flat = float(crops.std()) <= SATURATION
        pl_module = trainer.lightning_module
        pl_module.grad_norm = gradient_norm(pl_module.model)  # once per step: the collapse check and the log share it
        dead = saturated(reconstruction) or no_gradient(pl_module.grad_norm)
        collapsed = agree(trainer, dead, require_all=True)
        if not flat:
            self.saturated_steps = self.saturated_steps + 1 if collapsed else 0
        if self.saturated_steps >= SATURATED_STEPS:
            msg = (
                f"training collapsed at optimiser step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}): for {SATURATED_STEPS} steps in a row the reconstruction was at the ends "
                "of the output sigmoid, the same image for every crop or with no gradient passing it, so the network "
                f"learns nothing more; training stopped, and {kept_checkpoint(trainer)}. Seen "
                "with loss: ssim on binarised (black-and-white) images: use loss: l2; and at a peak learning_rate "
                "of 1e-3 (SSIM-AEe and SSIM-DAEe on magnetic_tile and hazelnut_toy, in bf16 and in fp32): halve "
                "learning_rate"
            )
            raise FloatingPointError(msg)

    @staticmethod
    def log_grad_norm(pl_module: LightningModule, batch_size: int) -> None:
        """Log ``grad_norm``, called by the training step after the optimiser step. Not from
        ``on_before_optimizer_step``: a log from another hook between the step's ``train_loss`` logs makes Lightning
        reset ``train_loss``'s epoch mean during an epoch's first batch."""
        pl_module.log("grad_norm", pl_module.grad_norm, on_step=True, on_epoch=False, batch_size=batch_size)
