"""A training run that crashes resumes from its last checkpoint to the same network as a run that never stopped
(issue 10): the checkpoint carries the random state that crops, augmentation, shuffling and workers draw from."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback

from anomalib_ssimae import SsimAe, SsimAeExtended, SsimDae

from .helpers import DATASETS

EPOCHS = 3


class Crash(Callback):
    """Dies at the start of the second epoch, after the first epoch's checkpoint was written."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def fit(
    root: Path,
    ckpt_path: Path | None = None,
    crash: bool = False,
    validate: bool = False,
    callbacks: list[Callback] | None = None,
) -> tuple[SsimDae, Engine]:
    # the denoising variant draws from the random state three ways: crops, flips/rotations and masked blocks
    model = SsimDae(crops_per_epoch=48, batch_size=8, image_size=[208, 512], rotation_prob=0.5, hflip_prob=0.5,
                    lr_schedule="cosine", warmup_crops=16, visualizer=False, seed=42)  # fmt: skip
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=16, eval_batch_size=16,
                         num_workers=0, seed=42)  # fmt: skip
    callbacks = [*(callbacks or []), *([Crash()] if crash else [])]
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=EPOCHS,
                    limit_val_batches=None if validate else 0, enable_progress_bar=False, default_root_dir=root,
                    callbacks=callbacks or None)  # fmt: skip
    engine.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, engine


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    straight, _ = fit(tmp_path / "straight")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "crashed", crash=True)
    checkpoints = sorted((tmp_path / "crashed").rglob("*.ckpt"))
    assert len(checkpoints) == 1  # what the crash left behind: the end of the first epoch
    saved = torch.load(checkpoints[0], weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 6)
    before = checkpoints[0].read_bytes()
    torch.manual_seed(0)  # whatever the caller's random state, the checkpoint's is restored
    resumed, engine = fit(tmp_path / "crashed", ckpt_path=checkpoints[0])

    assert engine.trainer.global_step == EPOCHS * 6
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert checkpoints[0].read_bytes() == before  # the checkpoint resumed from is not overwritten


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from lightning.pytorch import Callback
from tests.test_resume import fit

class Kill(Callback):  # SIGKILL in the middle of the second epoch: no exception, no clean-up, as a killed job
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGKILL)

fit(Path(sys.argv[1]), validate=True, callbacks=[Kill()])
"""


@pytest.mark.slow
def test_killed_run_with_validation_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    # a real kill (SIGKILL of the training process, mid-epoch, validation on), then the same run with ckpt_path
    import signal
    import subprocess
    import sys

    from .helpers import REPO

    straight, straight_engine = fit(tmp_path / "straight", validate=True)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "killed")], cwd=REPO, check=False)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = sorted((tmp_path / "killed").rglob("*.ckpt"))
    assert len(checkpoints) == 1  # written after the first epoch's validation
    saved = torch.load(checkpoints[0], weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 6)
    resumed, engine = fit(tmp_path / "killed", validate=True, ckpt_path=checkpoints[0])

    assert engine.trainer.global_step == EPOCHS * 6
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the last epoch's validation logs the same values
    expected = {k: float(v) for k, v in straight_engine.trainer.callback_metrics.items()}
    assert {k: float(v) for k, v in engine.trainer.callback_metrics.items()} == expected
    assert 0 < expected["val_loss"] < 0.5


def test_checkpoint_random_state_loads_with_weights_only(tmp_path: Path) -> None:
    # the random state is stored as tensors, tuples and numbers, so a weights-only load (safe) still reads it
    from anomalib_ssimae.models.ssim_ae.checkpoint import RANDOM_STATE, random_state, set_random_state

    torch.save({RANDOM_STATE: random_state()}, tmp_path / "state.pt")
    expected = torch.rand(3)
    set_random_state(torch.load(tmp_path / "state.pt", weights_only=True)[RANDOM_STATE])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = SsimDae(crops_per_epoch=48, batch_size=8, image_size=[208, 512], visualizer=False, seed=42)
    calls = []

    def diverging(module: torch.nn.Module, inputs: tuple, value: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return value * float("nan") if len(calls) == 9 else value  # step 8: third step of the second epoch

    model.loss.register_forward_hook(diverging)
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=16, num_workers=0, seed=42)
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=EPOCHS, limit_val_batches=0,
                    enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"training loss is nan at optimiser step 8 \(epoch 1\).*model\.ckpt"):
        engine.fit(model, datamodule=datamodule)
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 6
    weights = {k: v for k, v in saved["state_dict"].items() if k.startswith("model.network.")}
    assert weights and all(torch.isfinite(v).all() for v in weights.values())
    assert all(torch.isfinite(p).all() for p in model.model.parameters())  # the NaN never reached the weights


@pytest.mark.parametrize(
    ("model_class", "precision", "channels"),
    [(SsimAe, "bf16-mixed", 1), (SsimAeExtended, "32-true", 1), (SsimAeExtended, "bf16-mixed", 3)],
)
def test_collapsed_training_stops_with_the_cause_named(
    tmp_path: Path, model_class: type, precision: str, channels: int
) -> None:
    # the DeepPCB collapse: a blank reconstruction at the end of the sigmoid, which passes (almost) no gradient, so
    # the network stays a constant image; the run stops after SATURATED_STEPS such steps instead of spending its budget
    from anomalib_ssimae.callbacks.training_guards import SATURATED_STEPS

    # bf16 too: there 1 - 1e-3 rounds to 1.0, so the guard compares in Python floats (a bf16 comparison missed it)
    model = model_class(crops_per_epoch=8 * 60, batch_size=8, image_size=[208, 512], train_precision=precision,
                        in_channels=channels, visualizer=False, seed=42)  # fmt: skip
    output = model.model.network.output_layer
    assert isinstance(output, torch.nn.ConvTranspose2d) and output.out_channels == channels  # before the sigmoid
    with torch.no_grad():  # the state the SSIM loss drove DeepPCB into: logits of 30 to 3000; in colour, hazelnut_toy's
        output.bias.copy_(torch.tensor([1000.0, -1000.0, 1000.0][:channels]))  # red and blue at 1, green at 0
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=16, num_workers=0, seed=42)
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=1, limit_val_batches=0,
                    enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(
        FloatingPointError, match=rf"collapsed at optimiser step {SATURATED_STEPS - 1} \(epoch 0\)"
    ) as error:
        engine.fit(model, datamodule=datamodule)
    assert SATURATED_STEPS == 50
    # the remedies measured in benchmarks/results/collapse.md, named for the user
    assert "use loss: l2" in str(error.value) and "halve learning_rate" in str(error.value)


def test_maps_are_finite_for_constant_images_and_perfect_reconstructions() -> None:
    from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator, residual_map

    for value in (0.0, 0.5, 1.0):
        image = torch.full((1, 1, 64, 96), value)
        for residual in ("ssim", "l2", "ssim_l2"):
            assert torch.equal(residual_map(image, image, residual), torch.zeros(1, 1, 64, 96))  # exactly 0
        generator = AnomalyMapGenerator(score="max", score_sigma=4.0)
        anomaly_map, score = generator(image, 1 - image)  # the worst reconstruction of a flat image
        assert torch.isfinite(anomaly_map).all() and torch.isfinite(score).all()
    model = SsimDae(image_size=[128, 160], visualizer=False).eval()
    with torch.no_grad():
        prediction = model.model(torch.zeros(2, 3, 128, 160))
    assert torch.isfinite(prediction.anomaly_map).all() and torch.isfinite(prediction.pred_score).all()


class _Payload:
    """Unpickling this would run code (``__reduce__``): what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_checkpoints_load_without_running_code(tmp_path: Path) -> None:
    # Lightning reads local checkpoints with torch.load's default, weights_only=True since torch 2.6: the package's
    # own checkpoints load that way (above), and a checkpoint carrying code is refused before anything runs
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(Exception, match="Weights only load failed"):
        SsimDae.load_from_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_cli_checkpoint_path_does_not_run_code(tmp_path: Path) -> None:
    # `anomalib test --ckpt_path` goes through Engine.test(ckpt_path=...), Lightning's checkpoint connector: the same
    # weights-only load refuses the checkpoint before anything runs
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, tmp_path / "evil.ckpt")
    model = SsimDae(image_size=[208, 512], visualizer=False)
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", num_workers=0, seed=42)
    engine = Engine(accelerator="auto", devices=1, logger=False, default_root_dir=tmp_path)
    with pytest.raises(Exception, match="Weights only load failed"):
        engine.test(model, datamodule=datamodule, ckpt_path=tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_resumed_train_tests_the_weights_it_trained(tmp_path: Path, caplog) -> None:
    """``anomalib train ... --ckpt_path <last run's checkpoint>`` resumes, then tests: anomalib's ``Engine.train``
    passes the same ckpt_path to test, which restored the old checkpoint's weights, so the printed metrics and result
    images were the interrupted run's (found by a break-it helper: pixel AUROC 0.88636, the old run's, against
    0.88703 for the new checkpoint). The test now keeps the weights just trained, and says so."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "crashed", crash=True)
    (checkpoint,) = sorted((tmp_path / "crashed").rglob("*.ckpt"))
    old = torch.load(checkpoint, weights_only=True)["state_dict"]
    model = SsimDae(crops_per_epoch=48, batch_size=8, image_size=[208, 512], visualizer=False, seed=42)
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=16, eval_batch_size=16,
                         num_workers=0, seed=42)  # fmt: skip
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=EPOCHS, limit_val_batches=0,
                    enable_progress_bar=False, default_root_dir=tmp_path / "resumed")  # fmt: skip
    caplog.set_level(logging.INFO, logger="anomalib_ssimae")
    with pytest.warns(UserWarning, match=r"testing the weights this run trained \(step 18\), not those of .*step 6"):
        engine.train(model, datamodule=datamodule, ckpt_path=checkpoint)
    (own,) = sorted((tmp_path / "resumed").rglob("*.ckpt"))
    trained = torch.load(own, weights_only=True)["state_dict"]
    assert f"checkpoint: {own.resolve()}" in caplog.text  # the summary names the checkpoint tested, not the old one
    name = "model.network.encoder.0.weight"
    assert name in old
    assert not torch.equal(model.state_dict()[name], old[name])  # before: the old weights, restored for the test
    assert torch.equal(model.state_dict()[name], trained[name])  # the final checkpoint's

    # testing that checkpoint afterwards, on purpose, loads it
    engine.test(model, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)
    assert torch.equal(model.state_dict()[name], old[name])


def test_black_and_white_reconstructions_are_not_a_collapse() -> None:
    """Saturated pixels alone are no collapse: a network that reconstructs binarised crops has both ends of the
    sigmoid, but a different image per crop, and gradients. The same saturated image for every crop counts; so does a
    saturated output that passes no gradient, whatever the crop."""
    from types import SimpleNamespace

    model = SsimAe(visualizer=False)
    guards = model.guards
    trainer = SimpleNamespace(world_size=1, global_step=3, current_epoch=0, checkpoint_callback=None,
                              lightning_module=model)  # fmt: skip
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 1e-3)  # a healthy step's gradient: norm ~1
    crops = torch.rand(4, 1, 8, 8)
    binary = (torch.rand(4, 1, 8, 8) > 0.5).float()  # each crop its own black-and-white image
    for _ in range(60):
        guards.check_collapse(trainer, crops, binary)
    assert guards.saturated_steps == 0
    same = binary[:1].expand(4, -1, -1, -1)  # one black-and-white image whatever the crop
    for _ in range(49):
        guards.check_collapse(trainer, crops, same)
    assert guards.saturated_steps == 49
    with pytest.raises(FloatingPointError, match="at the ends of the output sigmoid, the same image for every crop"):
        guards.check_collapse(trainer, crops, same)
    guards.saturated_steps = 0
    for parameter in model.parameters():  # the hazelnut_toy collapse: a different image per crop, no gradient at all
        parameter.grad = torch.zeros_like(parameter)
    for _ in range(49):
        guards.check_collapse(trainer, crops, binary)
    with pytest.raises(FloatingPointError, match="or with no gradient passing it"):
        guards.check_collapse(trainer, crops, binary)
    # a gradient norm just above the limit is a gradient
    from anomalib_ssimae.callbacks.training_guards import NO_GRADIENT

    guards.saturated_steps = 0
    next(model.parameters()).grad[...] = 0
    next(model.parameters()).grad.view(-1)[0] = 2 * NO_GRADIENT
    for _ in range(60):
        guards.check_collapse(trainer, crops, binary)
    assert guards.saturated_steps == 0


@pytest.mark.slow
def test_a_saturated_output_that_passes_no_gradient_stops_training(tmp_path: Path) -> None:
    # SSIM-AEe on hazelnut_toy at 1e-3 in bf16 (benchmarks/results/stability.md): the latent exploded, every output
    # pixel sat at an end of the sigmoid, different per crop, and the gradient norm was exactly 0 for 300 steps while
    # the guard, which looked for one image for every crop, let it train on. Here the logits are +-1000 by their sign.
    from anomalib_ssimae.callbacks.training_guards import SATURATED_STEPS, saturated

    model = SsimAe(crops_per_epoch=8 * 60, batch_size=8, image_size=[208, 512], visualizer=False, seed=42)
    model.model.network.output_layer.register_forward_hook(lambda m, i, o: o.sign() * 1e3)
    seen = []
    model.model.network.register_forward_hook(lambda m, i, o: seen.append(saturated(o)) if m.training else None)
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=16, num_workers=0, seed=42)
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=1, limit_val_batches=0,
                    enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(FloatingPointError, match=rf"collapsed at optimiser step {SATURATED_STEPS - 1} \(epoch 0\)"):
        engine.fit(model, datamodule=datamodule)
    assert len(seen) == SATURATED_STEPS and not any(seen)  # never the same image for every crop
