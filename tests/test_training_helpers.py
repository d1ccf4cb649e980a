"""Crop budget per image, seeding, argument checks and image-file checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_ssimae import SsimAe, SsimAeExtended, SsimDae
from anomalib_ssimae.components.schedule import WarmupCosine, updates_for_images
from anomalib_ssimae.data.images import check_image_files
from anomalib_ssimae.precision import full_fp32, training_precision

from .helpers import DATASETS, EMBEDDED


def test_optimiser_steps_follow_the_images() -> None:
    # quickstart: 40 images in batches of 32 + 8, 20 steps of 128 crops -> 16 + 4 (not 10 + 10)
    assert [updates_for_images(0, 32, 40, 20), updates_for_images(32, 8, 40, 20)] == [16, 4]
    # magnetic_tile: 400 images, batches of 32 (last 16), 79 steps: the sum is exact and no batch is favoured
    steps = [updates_for_images(i * 32, min(32, 400 - i * 32), 400, 79) for i in range(13)]
    assert sum(steps) == 79
    assert max(steps[:-1]) - min(steps[:-1]) <= 1 and steps[-1] in (3, 4)


def test_seed_makes_initial_weights_reproducible() -> None:
    first, second, other = SsimAe(seed=7), SsimAe(seed=7), SsimAe(seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert not torch.equal(first.model.network.encoder[0].weight, other.model.network.encoder[0].weight)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"crops_per_epoch": 0}, "crops_per_epoch must be at least 1"),
        ({"latent_dim": 0}, "latent_dim must be at least 1"),
        ({"lr_step_size": 0}, "lr_step_size must be None or at least 1"),
        ({"image_size": [256]}, r"image_size must be an int or \[height, width\]"),
        ({"hflip_prob": 2.0}, "hflip_prob is a probability"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"lr_schedule": "cosine", "lr_step_size": 5}, "exclude each other"),
        ({"warmup_crops": -1}, "warmup_crops must be >= 0"),
        ({"train_precision": "16-mixed"}, "precision must be one of"),
        ({"image_size": 128, "score_sigma": 40.0}, "score_sigma 40.0 is too large for image_size 128 x 128"),
    ],
)
def test_arguments_fail_at_construction(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SsimAe(**arguments)
    with pytest.raises(ValueError, match="num_blocks must be at least 1"):
        SsimDae(num_blocks=0)


def test_image_check_names_bad_files(tmp_path: Path) -> None:
    good = sorted((EMBEDDED / "train" / "good").glob("*.png"))[:3]
    assert check_image_files(str(p) for p in good) == 3
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cannot read image .*truncated\.png"):
        check_image_files([str(good[1]), str(truncated)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read image .*empty\.png"):
        check_image_files([str(empty)])
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(deep)
    with pytest.raises(ValueError, match=r"deep\.png has PIL mode I;16"):
        check_image_files([str(deep)])


def test_warmup_cosine_factors() -> None:
    schedule = WarmupCosine(10, 110)
    assert [schedule(0), schedule(4), schedule(9)] == [0.1, 0.5, 1.0]
    assert schedule(60) == pytest.approx(0.5)  # halfway through the decay
    assert schedule(35) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    assert schedule(110) == pytest.approx(0.0) and schedule(500) == pytest.approx(0.0)
    assert WarmupCosine(0, 100)(0) == 1.0  # no warm-up: full rate at once


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2"}, "32-true"),  # AVX2-only EPYC: bf16 was 8x slower
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16-mixed"),  # EPYC with AVX512-BF16
        ({"avx512f", "amx_bf16", "amx_tile"}, "bf16-mixed"),  # Xeon with AMX
        (set(), "32-true"),  # no /proc/cpuinfo
    ],
)
def test_auto_precision_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: set, expected: str) -> None:
    monkeypatch.setattr("anomalib_ssimae.precision.cpu_flags", lambda: frozenset(flags))
    assert training_precision("auto") == expected
    assert training_precision("32-true") == "32-true"  # an explicit choice is kept


@pytest.mark.parametrize(("units", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_a_gpu_takes_bf16_units_not_emulation(
    monkeypatch: pytest.MonkeyPatch, units: bool, expected: str
) -> None:
    # torch's is_bf16_supported() says True on a T4 or V100 too (including_emulation=True by default: bf16 emulated
    # in fp32, slower, as on AVX2 CPUs); auto asked it that way and picked bf16 there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: units or including_emulation)
    assert training_precision("auto", "cuda") == expected


def test_full_fp32_turns_tf32_off_on_a_gpu_and_restores_the_users_choice() -> None:
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    try:
        conv.fp32_precision, matmul.fp32_precision = "tf32", "tf32"  # torch's conv default; matmul after "high"
        with full_fp32("cuda"):
            assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
        with full_fp32("cpu"):  # no TF32 on a CPU: nothing changes
            assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def test_warmup_cosine_follows_a_time_budget_when_it_is_further_along() -> None:
    schedule = WarmupCosine(10, 110)
    assert schedule(20, time_fraction=0.5) == pytest.approx(schedule(55))  # step 20 of 110, half the time: step 55
    assert schedule(20, time_fraction=0.1) == schedule(20)  # steps further along than time: steps decide
    assert schedule(100, time_fraction=0.5) == pytest.approx(schedule(100))  # steps further along: steps win
    assert schedule(20, time_fraction=1.0) == pytest.approx(0.0)  # budget used up: rate 0
    assert schedule(5, time_fraction=0.9) == 0.6  # warm-up is by steps only


def test_checkpoints_of_0_1_0_load() -> None:
    # 0.1.0 saved the score's 2-D Gaussian kernel as a buffer; it is now derived from score_sigma
    source, target = SsimAe(seed=1, visualizer=False), SsimAe(seed=2, visualizer=False)
    old = source.state_dict() | {"model.score_blur.kernel": torch.ones(1, 1, 33, 33)}
    target.load_state_dict(old)  # strict
    assert torch.equal(target.model.network.encoder[0].weight, source.model.network.encoder[0].weight)


def test_load_from_checkpoint_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    import lightning

    model = SsimAeExtended(seed=7, visualizer=False)  # hparams carry seed 7 (and network "extended")
    path = tmp_path / "model.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    loaded = SsimAeExtended.load_from_checkpoint(path, weights_only=False)
    assert torch.equal(torch.rand(3), expected)  # not the stream after seed_everything(7)
    assert loaded.hparams.network == "extended"
    assert torch.equal(loaded.model.network.encoder[0].weight, model.model.network.encoder[0].weight)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mode"), [("b_16bit.png", "I;16"), ("b_float.tif", "F")])
def test_predict_refuses_what_anomalib_would_misread(tmp_path: Path, name: str, mode: str) -> None:
    # anomalib's loader reads a 16-bit PNG as white and a float TIFF as black, and scores them without a word
    from anomalib.engine import Engine

    folder = tmp_path / "images"
    folder.mkdir()
    source = min((EMBEDDED / "test" / "good").glob("*.png"))
    Image.open(source).convert("L").save(folder / "a.png")
    gray = np.asarray(Image.open(source).convert("L"))
    bad = gray.astype(np.uint16) * 257 if mode == "I;16" else gray.astype(np.float32) / 255
    Image.fromarray(bad).save(folder / name)
    model = SsimAe(image_size=[208, 512], visualizer=False)
    engine = Engine(accelerator="auto", devices=1, logger=False, default_root_dir=tmp_path / "results")
    engine.predict(model=model, data_path=folder)
    records = [json.loads(line) for line in next((tmp_path / "results").rglob("*.jsonl")).read_text().splitlines()]
    by_name = {Path(r["image"]).name: r for r in records}
    assert set(by_name) == {"a.png", name}
    assert "anomaly_score" in by_name["a.png"]
    assert "anomaly_score" not in by_name[name]  # not scored: its error instead, and the other image is predicted
    assert f"{name} has PIL mode {mode}" in by_name[name]["error"]


def fit_on_mini(model: SsimAe, tmp_path: Path, **limit: object):
    """One epoch of ``model`` on bsdata_pitting_mini, validation off, ending at ``limit`` (max_steps or max_time):
    its 40 training images make one image batch, so every optimiser step of the epoch is inside that batch."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=64, num_workers=0)
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=1, limit_val_batches=0,
                    enable_progress_bar=False, default_root_dir=tmp_path, **limit)  # fmt: skip
    engine.fit(model, datamodule=datamodule)
    return engine


def test_max_time_stops_inside_an_image_batch(tmp_path: Path) -> None:
    # one image batch carries every optimiser step of the epoch here (40 images, batch 64): before, Lightning's
    # max_time check after the batch let a 2-second budget run the whole epoch of 100,000 crops
    import time

    model = SsimAe(crops_per_epoch=100_000, batch_size=8, image_size=[208, 512], visualizer=False)
    start = time.perf_counter()
    engine = fit_on_mini(model, tmp_path, max_time={"seconds": 2})
    assert time.perf_counter() - start < 30
    assert 0 < engine.trainer.global_step < 1000  # of 12,500 steps in the epoch


def test_max_steps_stops_inside_an_image_batch(tmp_path: Path) -> None:
    """``trainer.max_steps`` is exact: before, the whole image batch ran (``max_steps: 3789`` trained 4375 steps, the
    last ones at learning rate 0, since the cosine schedule ends at max_steps)."""
    model = SsimAe(crops_per_epoch=4000, batch_size=4, image_size=[208, 512], lr_schedule="cosine", warmup_crops=8,
                   visualizer=False)  # fmt: skip
    engine = fit_on_mini(model, tmp_path, max_steps=7)
    assert engine.trainer.global_step == 7  # of 1000 in the epoch's one image batch
    assert model._schedule.factor.total == 7  # the schedule ends where training does


def test_gradient_norm_is_logged(tmp_path: Path) -> None:
    """``grad_norm``, the global L2 norm of each optimiser step's gradients, is logged (it jumped from about 0.2 to
    11 when the extended network diverged on hazelnut_toy, ``benchmarks/results/collapse.md``)."""
    model = SsimAe(crops_per_epoch=4000, batch_size=4, image_size=[208, 512], visualizer=False)
    engine = fit_on_mini(model, tmp_path, max_steps=3)
    gradients = torch.cat([p.grad.flatten() for p in model.model.parameters()])  # the last step's, still there
    assert float(model.grad_norm) == pytest.approx(float(gradients.norm()), rel=1e-5) and float(model.grad_norm) > 0
    assert float(engine.trainer.logged_metrics["grad_norm"]) == pytest.approx(float(model.grad_norm))


def test_max_steps_mid_epoch_validates_for_early_stopping(tmp_path: Path) -> None:
    """The configs' EarlyStopping on val_loss with ``--trainer.max_steps 20``: training stopped inside the epoch
    without validating and the run failed ("Early stopping conditioned on metric 'val_loss' which is not available"),
    losing it; ``max_time`` validated. Now both validate before stopping."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from lightning.pytorch.callbacks import EarlyStopping

    model = SsimAe(crops_per_epoch=4000, batch_size=4, image_size=[208, 512], visualizer=False)
    datamodule = MVTecAD(root=DATASETS, category="bsdata_pitting_mini", train_batch_size=32, eval_batch_size=16,
                         num_workers=0, val_split_mode="from_test", val_split_ratio=0.5, seed=42)  # fmt: skip
    engine = Engine(
        accelerator="auto", devices=1, logger=False, max_epochs=5, max_steps=5, enable_progress_bar=False,
        callbacks=[EarlyStopping(monitor="val_loss", patience=10, mode="min")], default_root_dir=tmp_path,
    )  # fmt: skip
    engine.fit(model, datamodule=datamodule)
    assert engine.trainer.global_step == 5
    assert 0 < float(engine.trainer.callback_metrics["val_loss"]) < 1  # 1 - SSIM of the validation images


SIGTERM_RUN = """
import sys
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback
from anomalib_ssimae import SsimAe

class Started(Callback):
    def on_train_batch_start(self, *args):
        print("training", flush=True)

model = SsimAe(crops_per_epoch=100_000, batch_size=8, image_size=[208, 512], visualizer=False)
datamodule = MVTecAD(root=sys.argv[1], category="bsdata_pitting_mini", train_batch_size=64, num_workers=0)
engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=1, limit_val_batches=0,
                enable_progress_bar=False, default_root_dir=sys.argv[2], callbacks=[Started()])
engine.fit(model, datamodule=datamodule)
"""


def test_sigterm_stops_inside_an_image_batch_with_an_error_status(tmp_path: Path) -> None:
    """``kill``, ``docker stop`` or a scheduler's SIGTERM ends training within a step, with exit status 1 and the
    checkpoint that stays named. Before, Lightning acted only after the image batch (here 12,500 steps: a run went on
    for minutes) and then exited with status 0, as if training had finished."""
    import signal
    import subprocess
    import sys
    import time

    run = subprocess.Popen([sys.executable, "-c", SIGTERM_RUN, str(DATASETS), str(tmp_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        while (line := run.stdout.readline()) not in ("training\n", ""):  # the model summary comes first
            pass
        assert line == "training\n"
        time.sleep(2)  # some optimiser steps
        run.send_signal(signal.SIGTERM)
        start = time.perf_counter()
        code = run.wait(timeout=60)
        stopped_in = time.perf_counter() - start
    finally:
        run.kill()
    err = run.stderr.read()
    assert code == 1, err[-2000:]
    assert stopped_in < 20
    assert "training stopped by SIGTERM at optimiser step" in err
    assert "no checkpoint was written yet" in err  # the first epoch had not ended
