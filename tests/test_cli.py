"""End to end through anomalib's CLI: train (fit + test) and test from the checkpoint, on the embedded data.

The README's main job (configs/model/ssim_ae.yaml + configs/data/quickstart.yaml: bsdata_pitting_mini at 208 x 512,
40 training images; the 12 good and 16 pitting test images split label-aware into 6 + 8 for validation and 6 + 8
for test) with 2 short epochs. The printed test table is recomputed from the checkpoint's own predictions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image
from PIL import Image
from scipy.stats import rankdata
from torchvision.transforms.v2 import Normalize, Resize

import anomalib_ssimae
from anomalib_ssimae import SsimAe
from anomalib_ssimae.components.ssim import ssim_map

from .helpers import (
    CHECKPOINT,
    DATA_CONFIGS,
    DATASETS,
    EMBEDDED,
    MODEL_CONFIGS,
    QUICKSTART,
    REPO,
    RUN,
    anomalib,
    config_args,
    metrics,
)

pytestmark = [pytest.mark.slow, pytest.mark.cli]

METRICS = {"image_AUROC", "image_F1Max", "pixel_AUROC", "pixel_AUPRO", "pixel_F1Score"}
RECONSTRUCTION = {"reconstruction_SSIM", "reconstruction_MSE"}  # defect-free test images, Rádli & Czúni Table 5
# the config's data.root ("datasets") is relative to the repository root; the runs work in a temporary folder
SHORT = [
    "--data.root",
    str(DATASETS),
    "--trainer.max_epochs",
    "2",
    "--model.crops_per_epoch",
    "256",
    "--model.batch_size",
    "64",
]


def datamodule() -> MVTecAD:
    """The split of configs/data/quickstart.yaml."""
    data = MVTecAD(
        root=DATASETS,
        category="bsdata_pitting_mini",
        val_split_mode="from_test",
        val_split_ratio=0.5,
        seed=42,
        num_workers=0,
        eval_batch_size=16,
    )
    data.setup()
    return data


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count one half), the area under the exact ROC curve."""
    ranks = rankdata(scores)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Best F1 over all thresholds ``score >= t``."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_each_value = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    true_positives = np.cumsum(sorted_labels)[last_of_each_value]
    flagged = last_of_each_value + 1
    return float((2 * true_positives / (flagged + labels.sum())).max())


def recomputed_metrics(checkpoint: Path, model_class: type[SsimAe] = SsimAe, pixel: bool = True) -> dict[str, float]:
    """The test table from the checkpoint's predictions on the 14 test images, metrics by the formulas above.

    The model's forward is what `anomalib test` evaluates: pre-processing, network, post-processing (normalised
    scores and maps, in [0, 1]); the reconstruction metrics use the defect-free test images only. ``pixel``: also
    the pixel metrics, against the masks at their own size (the model must work at the images' 208 x 512).
    """
    model = model_class.load_from_checkpoint(checkpoint).eval()
    scores, labels, maps, masks, predicted_masks, ssim, mse = [], [], [], [], [], [], []
    with torch.no_grad():
        for batch in datamodule().test_dataloader():
            out = model(batch.image)
            scores.append(out.pred_score.flatten())
            labels.append(batch.gt_label.bool())
            maps.append(out.anomaly_map.flatten())
            predicted_masks.append(out.pred_mask.flatten())
            masks.append(batch.gt_mask.flatten().bool())
            inputs, reconstruction, _, _ = model.model.reconstruct(model.pre_processor.transform(batch.image))
            good = ~batch.gt_label.bool()
            ssim += ssim_map(inputs[good], reconstruction[good]).mean(dim=(1, 2, 3)).tolist()
            mse += ((inputs[good] - reconstruction[good]) * 255).pow(2).mean(dim=(1, 2, 3)).tolist()
    scores, labels = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    maps, masks = torch.cat(maps).numpy(), torch.cat(masks).numpy()
    hits = torch.cat(predicted_masks).numpy() & masks if pixel else None
    assert (len(scores), int(labels.sum()), len(ssim)) == (14, 8, 6)  # 6 good + 8 pitting test images
    values = {
        "image_AUROC": auroc(scores, labels),
        "image_F1Max": f1_max(scores, labels),
        "reconstruction_SSIM": float(np.mean(ssim)),
        "reconstruction_MSE": float(np.mean(mse)),
    }
    if pixel:
        values["pixel_AUROC"] = auroc(maps, masks)
        values["pixel_F1Score"] = float(2 * hits.sum() / (torch.cat(predicted_masks).numpy().sum() + masks.sum()))
    return values


def assert_table_matches(
    printed: dict[str, float], checkpoint: Path, model_class: type[SsimAe] = SsimAe, pixel: bool = True
) -> None:
    expected = recomputed_metrics(checkpoint, model_class, pixel)
    for name, value in expected.items():
        assert printed[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run `anomalib train` once for the module; returns (working directory, stdout)."""
    work = tmp_path_factory.mktemp("cli")
    stdout = anomalib("train", *config_args(*QUICKSTART), *SHORT, cwd=work)
    return work, stdout


def test_train_prints_metrics_and_writes_outputs(trained: tuple[Path, str]) -> None:
    work, stdout = trained
    values = metrics(stdout)
    assert set(values) == METRICS | RECONSTRUCTION
    checkpoint = work / CHECKPOINT
    assert checkpoint.is_file()
    assert f"checkpoint: {checkpoint}" in stdout
    assert "TensorBoard" in stdout or "AnomalibTensorBoardLogger" in stdout
    # the printed table is computed on the 14 test images of the config's split, from the saved model
    assert_table_matches(values, checkpoint)
    # one result panel per test image: anomalib's 4 tiles + the reconstruction, field_size 256 x 256 each
    panels = sorted((work / RUN / "images").rglob("*.png"))
    assert sorted(p.name for p in panels) == sorted(Path(p).name for p in datamodule().test_data.samples.image_path)
    assert Image.open(panels[0]).size == (5 * 256, 256)


def test_val_loss_is_logged_each_epoch(trained: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _ = trained
    (events,) = (work / "results" / "tensorboard" / "ssim_ae").glob("version_*")  # logger name: the model config's
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    val_loss = [event.value for event in accumulator.Scalars("val_loss")]
    assert len(val_loss) == 2  # one per epoch
    assert "val/image_and_reconstruction" in accumulator.Tags()["images"]
    # the last one is the training loss of the saved model on the tiled patches of the 6 defect-free validation
    # images (the defective ones are skipped), averaged over all their patches
    model = SsimAe.load_from_checkpoint(work / CHECKPOINT).eval()
    good = torch.stack([item.image for item in datamodule().val_data if not item.gt_label])
    assert len(good) == 6
    with torch.no_grad():
        _, _, patches, reconstructed = model.model.reconstruct(model.pre_processor.transform(good), keep_patches=True)
        expected = model.loss(patches, reconstructed).item()
    assert val_loss[-1] == pytest.approx(expected, rel=1e-4)


def test_checkpoint_reload_and_cli_test_reproduce_metrics(trained: tuple[Path, str]) -> None:
    work, train_stdout = trained
    checkpoint = work / CHECKPOINT
    model = SsimAe.load_from_checkpoint(checkpoint)  # AUPRO state in the checkpoint must not break this
    transforms = list(model.pre_processor.transform.transforms)
    assert [type(t) for t in transforms] == [Resize]
    assert list(transforms[0].size) == [208, 512]  # configs/data/quickstart.yaml
    assert not any(isinstance(t, Normalize) for t in transforms)
    assert torch.isfinite(model.post_processor.image_threshold)

    stdout = anomalib(
        "test", *config_args(*QUICKSTART), "--data.root", str(DATASETS), "--ckpt_path", str(checkpoint), cwd=work
    )
    tested, trained_values = metrics(stdout), metrics(train_stdout)
    assert set(tested) == METRICS | RECONSTRUCTION
    for name in METRICS | RECONSTRUCTION:
        assert abs(tested[name] - trained_values[name]) < 1e-5, name


@pytest.mark.parametrize("variant", ["ssim_ae_extended", "ssim_dae", "ssim_dae_extended"])
def test_variant_trains_tests_and_visualises(variant: str, tmp_path: Path) -> None:
    configs = config_args(MODEL_CONFIGS / f"{variant}.yaml", DATA_CONFIGS / "quickstart.yaml")
    # 128 x 320 (7 patches per image instead of 52) keeps the extended networks' runs short
    short = [
        "--data.root",
        str(DATASETS),
        "--trainer.max_epochs",
        "1",
        "--model.crops_per_epoch",
        "128",
        "--model.batch_size",
        "64",
        "--model.image_size",
        "[128, 320]",
    ]
    stdout = anomalib("train", *configs, *short, cwd=tmp_path)
    trained_values = metrics(stdout)
    assert set(trained_values) == METRICS | RECONSTRUCTION
    (run,) = (tmp_path / "results").glob("*/MVTecAD/bsdata_pitting_mini/v0")
    model_class = getattr(anomalib_ssimae, run.parts[-4])
    assert (
        model_class.__name__
        == {"ssim_ae_extended": "SsimAeExtended", "ssim_dae": "SsimDae", "ssim_dae_extended": "SsimDaeExtended"}[
            variant
        ]
    )
    assert any((run / "images").rglob("*.png"))
    checkpoint = run / "weights" / "lightning" / "model.ckpt"
    model = model_class.load_from_checkpoint(checkpoint)
    assert type(model) is model_class and model.hparams.denoising == ("dae" in variant)
    assert_table_matches(trained_values, checkpoint, model_class, pixel=False)  # pixel metrics: on the masks resized
    # the same configs and image size as in training (README): the position normalisation is stored per pixel
    tested = metrics(anomalib("test", *configs, *short[:2], *short[-2:], "--ckpt_path", str(checkpoint), cwd=tmp_path))
    assert all(abs(tested[name] - trained_values[name]) < 1e-5 for name in METRICS)


def test_same_command_gives_the_same_model(trained: tuple[Path, str], tmp_path: Path) -> None:
    """anomalib's CLI ignores seed_everything; the model's `seed` must make two runs identical."""
    work, _ = trained
    anomalib("train", *config_args(*QUICKSTART), *SHORT, cwd=tmp_path)
    first = torch.load(work / CHECKPOINT, map_location="cpu", weights_only=False)["state_dict"]
    second = torch.load(tmp_path / CHECKPOINT, map_location="cpu", weights_only=False)["state_dict"]
    weights = [k for k in first if k.startswith("model.network.")]
    assert weights and all(torch.equal(first[k], second[k]) for k in weights)


def test_defect_free_thresholds_from_yaml_and_predict_records(tmp_path: Path) -> None:
    """configs/defect_free_thresholds.yaml as a third config; `anomalib predict` on a folder writes one JSON-lines
    record and one picture per image, in original pixels (the model works at 128 x 320 here), with the
    checkpoint's raw thresholds."""
    smaller = ["--model.image_size", "[128, 320]"]
    anomalib(
        "train",
        *config_args(*QUICKSTART, REPO / "configs" / "defect_free_thresholds.yaml"),
        *SHORT,
        *smaller,
        cwd=tmp_path,
    )
    checkpoint = tmp_path / CHECKPOINT
    model = SsimAe.load_from_checkpoint(checkpoint)
    assert type(model.post_processor).__name__ == "DefectFreePostProcessor"
    assert model.post_processor.image_fpr == 0.01
    assert int(model.post_processor.calibration_images) == 6  # the defect-free validation images
    folder = EMBEDDED / "test" / "pitting"
    predict = [
        "predict",
        *config_args(*QUICKSTART),
        *smaller,
        "--ckpt_path",
        str(checkpoint),
        "--data",
        str(folder),
        "--default_root_dir",
        str(tmp_path / "predict"),
    ]
    stdout = anomalib(*predict, cwd=tmp_path)
    records_path = Path(re.search(r"prediction records \(JSON lines\): (\S+)", stdout).group(1))
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == sorted(p.name for p in folder.glob("*.png"))
    # the CLI uses the checkpoint's calibrated post-processor: same normalised score as the reloaded model
    model.eval()
    for record in records:
        with torch.no_grad():
            expected = model(read_image(record["image"], as_tensor=True)[None]).pred_score.item()
        assert record["anomaly_score"] == pytest.approx(expected, abs=1e-4)
    for record in records:
        assert Path(record["overlay"]).is_file()
        assert (record["width"], record["height"]) == (512, 208)  # original pixels, not the model's 320 x 128
        assert record["threshold"]["pixel"]["raw"] == pytest.approx(float(model.post_processor.pixel_threshold))
        assert record["label"] == ("anomalous" if record["anomaly_score"] > 0.5 else "normal")
    # a second run never overwrites the first records file
    second = Path(re.search(r"prediction records \(JSON lines\): (\S+)", anomalib(*predict, cwd=tmp_path)).group(1))
    assert second != records_path and records_path.is_file()
