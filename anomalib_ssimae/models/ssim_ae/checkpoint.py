"""Checkpoint compatibility of the SSIM-AE Lightning module: loading without side effects, across versions and
with the post-processor the checkpoint was trained with."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from anomalib_ssimae.callbacks.training_guards import last_checkpoint
from anomalib_ssimae.components.random_state import preserved_random_state
from anomalib_ssimae.post_processing import DefectFreePostProcessor

RANDOM_STATE = "anomalib_ssimae_random_state"  # checkpoint key


def random_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's random state as tensors, tuples and ints (``torch.load(weights_only=True)``
    reads them)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restore a :func:`random_state`."""
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


MODEL_CLASS = "anomalib_ssimae_model_class"  # checkpoint key: the name of the class that saved it
# (network, denoising) -> the variant whose defaults they are: the class of checkpoints saved before MODEL_CLASS
VARIANTS = {
    ("ssim_ae", False): "SsimAe",
    ("extended", False): "SsimAeExtended",
    ("ssim_ae", True): "SsimDae",
    ("extended", True): "SsimDaeExtended",
}
CONFIGS = {
    "SsimAe": "ssim_ae",
    "SsimAeExtended": "ssim_ae_extended",
    "SsimDae": "ssim_dae",
    "SsimDaeExtended": "ssim_dae_extended",
}


def checkpoint_class(checkpoint: dict[str, Any]) -> str | None:
    """Name of the model class a checkpoint holds: the one that saved it, or, for checkpoints of 0.3.0 and earlier,
    the variant its ``network`` and ``denoising`` settings are the defaults of; ``None`` if neither tells."""
    if checkpoint.get(MODEL_CLASS):
        return str(checkpoint[MODEL_CLASS])
    hparams = checkpoint.get("hyper_parameters") or {}
    return VARIANTS.get((hparams.get("network", "ssim_ae"), bool(hparams.get("denoising", False))))


def check_checkpoint_class(model: Any, checkpoint: dict[str, Any], source: str = "the checkpoint") -> None:
    """Refuse a checkpoint of another variant than ``model``'s class: under another variant's configs torch only
    listed mismatched keys, and ``anomalib export --model <other variant>`` exported the checkpoint's graph under the
    other name (in ``calibration.json`` too) and exited 0.

    Raises:
        ValueError: naming the class the checkpoint holds and the ``--model`` / config to use instead.
    """
    held, own = checkpoint_class(checkpoint), type(model).__name__
    if held is None or held == own or (MODEL_CLASS not in checkpoint and own not in CONFIGS):
        return
    hint = f"anomalib export --model anomalib_ssimae.{held}" if held in CONFIGS else f"the class {held}"
    if held in CONFIGS:
        hint += (
            f"; train/test/predict: --config configs/model/{CONFIGS[held]}.yaml with the data config that trained it"
        )
    msg = f"{source} holds a {held} model, not a {own}: use {hint}"
    raise ValueError(msg)


class CheckpointCompatibilityMixin:
    """Mixed into :class:`~anomalib_ssimae.SsimAe` before ``AnomalibModule``.

    - ``load_from_checkpoint`` leaves the caller's random state alone (the model's ``seed`` would reseed it);
    - ``load_state_dict`` ignores the evaluator's entries (metric settings such as AUPRO's ``fpr_limit``, which
      differ whenever a checkpoint is reloaded with another evaluator) and the score-blur kernel that 0.1.0
      checkpoints saved (it is now derived from ``score_sigma``); a checkpoint without position-normalisation
      buffers loads into a model with ``position_normalization`` (unfitted: test/predict then fit it), and one with
      them into a model without (they are dropped, with a warning); one without a frame check (0.3.0) loads with
      it unfitted (test/predict then fit it);
    - ``on_load_checkpoint`` rebuilds a :class:`DefectFreePostProcessor` when the checkpoint has one, and refuses a
      checkpoint of another variant (:func:`check_checkpoint_class`; checkpoints name their class);
    - checkpoints carry the random state (crop positions, augmentation, masked blocks, shuffling and dataloader
      worker seeds all draw from it), and ``fit(ckpt_path=...)`` restores it, so that a resumed run continues
      with the same random numbers as one that was never stopped (one process; under DDP the checkpoint holds the
      first process's state and each process then draws its own crops, so a resumed run differs in its crops).
    """

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, without reseeding the caller's random state."""
        with preserved_random_state():
            return super().load_from_checkpoint(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict`` without the evaluator's entries and 0.1.0's blur kernel, tolerating the
        position-normalisation buffers' presence or absence (see the class docstring)."""
        own = self.state_dict()
        extra = [k for k in state_dict if ".position." in k and k not in own]
        if extra:
            warnings.warn(
                "the checkpoint has a position normalisation but this model was built without it "
                "(position_normalization: false): its anomaly maps will not be normalised",
                stacklevel=2,
            )
        kept = {
            k: v
            for k, v in own.items()
            if k.startswith("evaluator.") or ((".position." in k or ".frame_check." in k) and k not in state_dict)
        }
        state_dict = {
            k: v
            for k, v in state_dict.items()
            if not k.startswith("evaluator.") and not k.endswith("blur.kernel") and k not in extra
        } | kept
        for key in [k for k in state_dict if k.endswith(".position.weight") and k in own]:
            if state_dict[key].shape != own[key].shape:  # another image_size than in training: positions scale
                warnings.warn(
                    f"the checkpoint's position normalisation is {tuple(state_dict[key].shape[-2:])} px, this model's "
                    f"image_size is {tuple(own[key].shape[-2:])}: resized; pass the training configs to avoid this",
                    stacklevel=2,
                )
                state_dict[key] = torch.nn.functional.interpolate(
                    state_dict[key], size=own[key].shape[-2:], mode="bilinear", align_corners=False
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random state and the model's class name with the weights (see the class docstring)."""
        checkpoint[RANDOM_STATE] = random_state()
        checkpoint[MODEL_CLASS] = type(self).__name__
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random state when training resumes; rebuild a :class:`DefectFreePostProcessor` when the checkpoint has one: ``load_from_checkpoint`` (used by
        ``anomalib export`` and ``predict --ckpt_path``) builds the default components, whose state would not fit.

        Raises:
            ValueError: for a checkpoint of another variant (:func:`check_checkpoint_class`).
        """
        trainer = self._trainer
        source = f"checkpoint {trainer.ckpt_path}" if trainer is not None and trainer.ckpt_path else "the checkpoint"
        check_checkpoint_class(self, checkpoint, source)
        old = self.post_processor
        if (
            "post_processor.image_fpr_quantiles" in checkpoint.get("state_dict", {})
            and old is not None
            and not isinstance(old, DefectFreePostProcessor)
        ):
            self.post_processor = DefectFreePostProcessor(**(checkpoint.get("anomalib_post_processor_config") or {}))
            # `trainer.predict/test/fit(ckpt_path=...)` registered the old one as a callback before loading
            trainer = self._trainer
            if trainer is not None:
                trainer.callbacks[:] = [self.post_processor if cb is old else cb for cb in trainer.callbacks]
        trainer = self._trainer
        if RANDOM_STATE in checkpoint and trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            set_random_state(checkpoint[RANDOM_STATE])
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            self._resumed_from = str(trainer.ckpt_path)
        elif (
            trainer is not None
            and trainer.state.fn == TrainerFn.TESTING
            and str(trainer.ckpt_path) == getattr(self, "_resumed_from", None)
            and trainer.global_step > checkpoint.get("global_step", 0)
        ):  # anomalib's `train` (Engine.train) hands fit's --ckpt_path to its test too: the resumed-from weights
            warnings.warn(
                f"testing the weights this run trained (step {trainer.global_step}), not those of {trainer.ckpt_path} "
                f"(step {checkpoint.get('global_step')}), which training resumed from",
                stacklevel=2,
            )
            checkpoint["state_dict"] = self.state_dict()
            self._resumed_from = None  # once: a later test of that checkpoint is meant
            self._tested_checkpoint = last_checkpoint(trainer)  # the run's own, for RunSummary's "checkpoint:" line
        super().on_load_checkpoint(checkpoint)
