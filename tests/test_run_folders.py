"""Outputs that collided and failed runs that misled the next (issue 30): one test picture per input, `test` of an
older checkpoint writes beside that run and not into the newer one `latest` points at, and a failed training leaves
no empty run folder and moves `latest` back to the previous good run.

The trained model is the short defect-free-calibrated training of ``conftest.trained`` (one per session: 128
crops at 256 x 256 on the embedded data); the run folders of "earlier runs" are built by the tests (a copy of that
checkpoint, pictures that must survive), as anomalib's Engine lays them out.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anomalib.engine import Engine
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping
from PIL import Image

from anomalib_ssimae import SsimAe
from anomalib_ssimae.callbacks import ValidationMonitor
from anomalib_ssimae.callbacks.run_folder import FAILED, run_folder_of_checkpoint
from anomalib_ssimae.data import Folder, MVTecAD
from anomalib_ssimae.post_processing import DefectFreePostProcessor

from .helpers import DATASETS, EMBEDDED, QUICKSTART, REPO, config_args, quickstart_datamodule

GOOD = sorted((EMBEDDED / "test" / "good").glob("*.png"))
PITTING = sorted((EMBEDDED / "test" / "pitting").glob("*.png"))
TRAIN = sorted((EMBEDDED / "train" / "good").glob("*.png"))
WORKSPACE = Path("SsimAe") / "MVTecAD" / "bsdata_pitting_mini"  # below default_root_dir, as anomalib names it


def engine(root: Path, **kwargs: object) -> Engine:
    return Engine(
        default_root_dir=root, logger=False, accelerator="auto", devices=1, enable_progress_bar=False, **kwargs
    )


def first_tile_mean(picture: Path) -> float:
    """Mean of the panel's first tile (the input image, 256 x 256), in [0, 1]."""
    return float(np.asarray(Image.open(picture).convert("L"), dtype=np.float64)[:256, :256].mean() / 255)


def two_lines(root: Path) -> dict[Path, float]:
    """A Folder dataset of two production lines whose test folders hold the same file names: ``lineA/good/001.png``,
    ``lineA/bad/001.png``, ``lineA/bad/002.png`` and the same three under ``lineB/``, plus 4 training images. Each
    test image is a real one darkened by its own factor, so that its mean tells which input a result picture shows.
    Returns test image -> its mean gray level in [0, 1]."""
    sources = {Path("good/001.png"): GOOD[0], Path("bad/001.png"): PITTING[0], Path("bad/002.png"): PITTING[1]}
    factors = iter([1.0, 0.8, 0.6, 0.4, 0.25, 0.1])
    made = {}
    for line in ("lineA", "lineB"):
        for relative, source in sources.items():
            path = root / line / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray((np.asarray(Image.open(source).convert("RGB")) * next(factors)).astype(np.uint8))
            image.save(path)
            made[path] = float(np.asarray(image.convert("L").resize((256, 256)), dtype=np.float64).mean() / 255)
    (root / "train").mkdir()
    for source in TRAIN[:4]:
        shutil.copy(source, root / "train" / source.name)
    return made


@pytest.mark.slow
def test_same_file_names_in_two_folders_get_one_test_picture_each(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """6 test images, of which line A's and line B's share names: anomalib's rule (path after the dataset's name,
    else the parent folder) gave 3 pictures, line B's replacing line A's. Each now keeps its path below the folder
    common to the test images, and a second test writes a new folder instead of over the first's pictures."""
    checkpoint, _ = trained
    made = two_lines(tmp_path / "plant")
    means = sorted(made.values())
    assert min(b - a for a, b in itertools.pairwise(means)) > 0.04  # each input told apart by its mean
    datamodule = Folder(  # named unlike its folder, as anomalib's rule then keeps only the parent folder's name
        name="lines",
        root=tmp_path / "plant",
        normal_dir="train",
        normal_test_dir=["lineA/good", "lineB/good"],
        abnormal_dir=["lineA/bad", "lineB/bad"],
        val_split_mode="none",
        num_workers=0,
        eval_batch_size=4,
    )
    root = tmp_path / "results"
    model = SsimAe.load_from_checkpoint(checkpoint)
    with pytest.warns(UserWarning):  # no masks: the pixel metrics cannot be computed
        engine(root).test(model, datamodule=datamodule, verbose=False)
    written = sorted(root.rglob("*.png"))
    assert len(written) == 6  # anomalib's names: 3
    first = Path(os.path.commonpath(written))  # this test's picture folder, <run>/images/test-<date>-<time>
    assert first == model.visualizer.test_dir and first.parent.name == "images"
    assert [p.relative_to(first) for p in written] == sorted(p.relative_to(tmp_path / "plant") for p in made)
    for image, mean in made.items():  # each picture shows its own input
        assert first_tile_mean(first / image.relative_to(tmp_path / "plant")) == pytest.approx(mean, abs=0.02)

    before = {path: path.read_bytes() for path in written}
    with pytest.warns(UserWarning):
        engine(root).test(model, datamodule=datamodule, verbose=False)
    new = sorted(set(root.rglob("*.png")) - set(written))
    second = Path(os.path.commonpath(new))
    assert len(new) == 6 and second.parent == first.parent  # a new folder beside the first
    assert {path: path.read_bytes() for path in written} == before


@pytest.mark.slow
def test_test_of_an_older_checkpoint_writes_beside_its_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """`anomalib test --ckpt_path <v0's checkpoint>` while `latest` points to v1: anomalib's Engine put the test
    into v1 and replaced v1's result pictures with v0's. Now it writes into v0 (a new picture folder there), and
    v1 stays as it was; the trainer's default_root_dir is the Engine's again afterwards."""
    checkpoint, _ = trained
    workspace = tmp_path / "results" / WORKSPACE
    for run in ("v0", "v1"):
        (workspace / run / "weights" / "lightning").mkdir(parents=True)
        shutil.copy(checkpoint, workspace / run / "weights" / "lightning" / "model.ckpt")
    # v1's result pictures where anomalib 2.7 put them (images/<parent folder>/<name>: "MVTecAD" is not in the path)
    for source in [*GOOD, *PITTING]:
        picture = workspace / "v1" / "images" / source.parent.name / source.name
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_bytes(b"v1's picture")
    (workspace / "latest").symlink_to(workspace / "v1", target_is_directory=True)
    v1_before = {p: p.read_bytes() for p in (workspace / "v1").rglob("*") if p.is_file()}

    tester = engine(tmp_path / "results")
    model = SsimAe.load_from_checkpoint(checkpoint)
    tester.test(
        model,
        datamodule=quickstart_datamodule(),
        ckpt_path=workspace / "v0" / "weights" / "lightning" / "model.ckpt",
        verbose=False,
    )
    assert {p: p.read_bytes() for p in (workspace / "v1").rglob("*") if p.is_file()} == v1_before
    pictures = list(model.visualizer.test_dir.rglob("*.png"))
    assert model.visualizer.test_dir.parent == workspace / "v0" / "images"
    assert len(pictures) == 14  # the test half of the quickstart split: 6 good, 8 pitting
    assert Path(tester.trainer.default_root_dir) == workspace / "v1"  # restored after the test


def test_run_folder_of_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "v3" / "weights" / "lightning").mkdir(parents=True)
    (tmp_path / "latest").symlink_to(tmp_path / "v3", target_is_directory=True)
    assert run_folder_of_checkpoint(tmp_path / "latest" / "weights" / "lightning" / "model.ckpt") == tmp_path / "v3"
    assert run_folder_of_checkpoint(tmp_path / "elsewhere" / "model.ckpt") == tmp_path / "elsewhere"


def good_run(workspace: Path, name: str) -> Path:
    """An earlier finished run folder, as anomalib's Engine leaves it (a checkpoint, pictures), and `latest` to it."""
    run = workspace / name
    (run / "weights" / "lightning").mkdir(parents=True)
    (run / "weights" / "lightning" / "model.ckpt").write_bytes(b"weights")
    (run / "images").mkdir()
    (run / "images" / "000.png").write_bytes(b"picture")
    (workspace / "latest").unlink(missing_ok=True)
    (workspace / "latest").symlink_to(run, target_is_directory=True)
    return run


def mvtec_without_good_test_images(root: Path) -> Path:
    """``<root>/part`` in MVTec layout: 4 training images, 4 pitting test images with masks, no test/good/."""
    part = root / "part"
    for folder, sources in (("train/good", TRAIN[:4]), ("test/pitting", PITTING[:4])):
        (part / folder).mkdir(parents=True)
        for source in sources:
            (part / folder / source.name).symlink_to(source)
    (part / "ground_truth" / "pitting").mkdir(parents=True)
    for source in PITTING[:4]:
        mask = EMBEDDED / "ground_truth" / "pitting" / f"{source.stem}_mask.png"
        (part / "ground_truth" / "pitting" / mask.name).symlink_to(mask)
    return part


@pytest.mark.slow
@pytest.mark.cli
def test_refused_training_leaves_no_run_folder(tmp_path: Path) -> None:
    """`anomalib train` with configs/defect_free_thresholds.yaml on a split without defect-free validation images,
    then with a mistyped data.root: each is refused before training, with the reason, and leaves no v1/ behind;
    `latest` points at the earlier good run v0 again. With no earlier run, `latest` is gone too."""
    mvtec_without_good_test_images(tmp_path / "data")
    workspace = tmp_path / "results" / "SsimAe" / "MVTecAD" / "part"
    v0 = good_run(workspace, "v0")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    train = [
        str(Path(sys.executable).parent / "anomalib"),
        "train",
        *config_args(*QUICKSTART, REPO / "configs" / "defect_free_thresholds.yaml"),
        "--data.category",
        "part",
        "--trainer.max_steps",
        "5",
        "--model.crops_per_epoch",
        "16",
    ]

    def run(root: Path, cwd: Path) -> str:
        result = subprocess.run(
            [*train, "--data.root", str(root)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode != 0, result.stdout[-2000:]
        return result.stderr

    stderr = run(tmp_path / "data", tmp_path)
    assert "validation split has 0 defect-free images" in stderr
    assert sorted(p.name for p in workspace.iterdir()) == ["latest", "v0"]
    assert (workspace / "latest").resolve() == v0

    stderr = run(tmp_path / "typo", tmp_path)
    assert f"{tmp_path / 'typo' / 'part'}: no such folder" in stderr
    assert not (tmp_path / "typo").exists()  # nothing downloaded into it
    assert sorted(p.name for p in workspace.iterdir()) == ["latest", "v0"]
    assert (workspace / "latest").resolve() == v0

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run(tmp_path / "typo", fresh)
    assert not any(re.fullmatch(r"v\d+|latest", p.name) for p in (fresh / "results").rglob("*"))


class FailInSecondEpoch(Callback):
    """Raises at the start of the second training epoch, after the first epoch's checkpoint was written."""

    def on_train_epoch_start(self, trainer: object, pl_module: object) -> None:
        if trainer.current_epoch == 1:
            msg = "power cut"
            raise RuntimeError(msg)


@pytest.mark.slow
def test_failed_training_keeps_its_work_and_latest_goes_back(tmp_path: Path) -> None:
    """A training that fails after writing a checkpoint keeps its folder (marked FAILED.txt, checkpoint kept),
    `latest` points at the previous good run; a later refused training skips the failed run when it moves
    `latest` back."""
    root = tmp_path / "results"
    workspace = root / WORKSPACE
    v0 = good_run(workspace, "v0")
    datamodule = MVTecAD(
        root=DATASETS, category="bsdata_pitting_mini", val_split_mode="from_test", val_split_ratio=0.5, seed=42,
        num_workers=0, train_batch_size=40, eval_batch_size=16,
    )  # fmt: skip
    model = SsimAe(image_size=128, crops_per_epoch=16, batch_size=16)
    with pytest.raises(RuntimeError, match="power cut"):
        engine(root, max_epochs=2, callbacks=[FailInSecondEpoch()]).fit(model, datamodule=datamodule)
    v1 = workspace / "v1"
    assert (v1 / "weights" / "lightning" / "model.ckpt").is_file()  # the first epoch's work is kept
    assert (v1 / FAILED).is_file() and "RuntimeError: power cut" in (v1 / FAILED).read_text()
    assert (workspace / "latest").resolve() == v0

    refused = SsimAe(image_size=128, crops_per_epoch=16, batch_size=16, post_processor=DefectFreePostProcessor())
    no_good = MVTecAD(root=mvtec_without_good_test_images(tmp_path / "data").parent, category="part", num_workers=0)
    with pytest.raises(ValueError, match="0 defect-free images"):
        engine(root, max_epochs=1).fit(refused, datamodule=no_good)
    assert not (root / "SsimAe" / "MVTecAD" / "part").exists() or not any(
        (root / "SsimAe" / "MVTecAD" / "part").iterdir()
    )
    (workspace / "latest").unlink()  # as if the failed run v1 were the newest: the good one is still found
    (workspace / "latest").symlink_to(v1, target_is_directory=True)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        engine(root, max_epochs=1).fit(
            model, datamodule=MVTecAD(root=tmp_path / "typo", category="bsdata_pitting_mini")
        )
    assert sorted(p.name for p in workspace.iterdir()) == ["latest", "v0", "v1"]
    assert (workspace / "latest").resolve() == v0


class Split:
    """A validation split as the checks see it: ``samples.label_index`` (0: defect-free) and a length."""

    def __init__(self, labels: list[int]) -> None:
        self.samples = pd.DataFrame({"label_index": labels})

    def __len__(self) -> int:
        return len(self.samples)


def fake_trainer(labels: list[int], callbacks: list[Callback] | None = None) -> object:
    trainer = type("Trainer", (), {})()
    trainer.datamodule = type("DataModule", (), {"val_data": Split(labels)})()
    trainer.callbacks = callbacks or []
    return trainer


def test_val_loss_monitor_without_defect_free_validation_images_is_refused_before_training() -> None:
    """EarlyStopping on val_loss (the configs') stopped the run after its first epoch when the validation split had
    no defect-free image; now refused at fit start, naming the callback."""
    with pytest.raises(ValueError, match=r"EarlyStopping monitor val_loss, but the validation split \(3 images\)"):
        ValidationMonitor().on_fit_start(fake_trainer([1, 1, 1], [EarlyStopping(monitor="val_loss")]), None)
    # accepted: a non-strict EarlyStopping (it only warns), a monitor of another metric, a defect-free image
    ValidationMonitor().on_fit_start(fake_trainer([1, 1, 1], [EarlyStopping(monitor="val_loss", strict=False)]), None)
    ValidationMonitor().on_fit_start(fake_trainer([1, 1, 1], [EarlyStopping(monitor="image_AUROC")]), None)
    ValidationMonitor().on_fit_start(fake_trainer([0, 1, 1], [EarlyStopping(monitor="val_loss")]), None)


def test_defect_free_thresholds_without_defect_free_validation_images_are_refused_before_training() -> None:
    """They fell back to anomalib's F1-adaptive thresholds on defective images only, with a warning after the first
    epoch; now refused at fit start."""
    with pytest.raises(ValueError, match="has 0 defect-free images; at least 2 are needed"):
        DefectFreePostProcessor().on_fit_start(fake_trainer([1, 1]), None)


def test_missing_dataset_folder_is_refused_not_downloaded(tmp_path: Path) -> None:
    """A mistyped data.root made anomalib download MVTec AD (4.9 GB) for a category it does not hold."""
    with pytest.raises(FileNotFoundError, match=r"typo/part: no such folder .*data.init_args.root"):
        MVTecAD(root=tmp_path / "typo", category="part").prepare_data()
    assert not (tmp_path / "typo").exists()
