"""The datamodules ``anomalib_ssimae.data.MVTecAD`` / ``Folder`` on inputs anomalib 2.7 gets wrong (issue 10).

Every dataset is built in ``tmp_path`` from the embedded BSData images and their real masks (16 pitting images, one
defect region each, 9 to 1057 pixels, all different). What anomalib's own datamodules did with each input
(2026-11-29/30): masks paired by sort order (``1, 2, 10`` -> false mismatch error; masks in two ``mask_dir`` folders
sorting against the images -> each image silently got another image's mask), a missing mask -> a NumPy/pandas length
error naming no file, ``.ipynb_checkpoints`` -> ``TypeError: ... NoneType``, ``._*.png`` -> a sample that stops the run,
``.jpg``/``.bmp`` training images dropped silently, ``.bmp`` masks or no ``ground_truth/`` -> pandas length error, only
good test images -> every metric printed as 0.0, anti-aliased mask edges -> a ring of extra defect pixels.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import read_mask
from anomalib.metrics import AUROC
from PIL import Image

from anomalib_ssimae.data import Folder
from anomalib_ssimae.data.images import find_images
from anomalib_ssimae.data.masks import read_binary_mask

from .data_builders import (
    APPLE_DOUBLE,
    GOOD,
    PITTING,
    TRAIN,
    clean_mask,
    mask_of,
    masks_by_image,
    mvtec,
    setup_folder,
    setup_mvtec,
)


def test_embedded_masks_differ() -> None:
    """The pairing tests below can tell masks apart: every real mask is different."""
    masks = [clean_mask(image) for image in PITTING]
    assert len({mask.tobytes() for mask in masks}) == len(masks) == 16


@pytest.mark.filterwarnings("ignore:.*are all defective")
def test_folder_pairs_1_2_10_by_name(tmp_path: Path) -> None:
    """Defective images ``1.png, 2.png, 10.png`` each get their own mask ``<n>_mask.png`` (anomalib: false
    mismatch error, as "10" sorts before "2" among images and masks differently)."""
    (tmp_path / "good").mkdir()
    (tmp_path / "defective").mkdir()
    (tmp_path / "masks").mkdir()
    for image in TRAIN[:4]:
        shutil.copy(image, tmp_path / "good" / image.name)
    source = dict(zip(("1", "2", "10"), PITTING[:3], strict=True))
    for name, image in source.items():
        shutil.copy(image, tmp_path / "defective" / f"{name}.png")
        shutil.copy(mask_of(image), tmp_path / "masks" / f"{name}_mask.png")
    masks = masks_by_image(
        setup_folder(tmp_path, normal_dir="good", abnormal_dir="defective", mask_dir="masks").test_data
    )
    assert sorted(masks) == ["1.png", "10.png", "2.png"]
    for name, image in source.items():
        assert np.array_equal(masks[f"{name}.png"], clean_mask(image))


@pytest.mark.filterwarnings("ignore:.*are all defective")
def test_folder_pairs_across_mask_folders(tmp_path: Path) -> None:
    """Two defect folders with the same file names, their masks in two folders listed in the same order but sorting
    the other way (anomalib silently gave the crack images the pit masks and vice versa)."""
    source = {"crack": PITTING[:3], "pit": PITTING[3:6]}
    for folder in ("good", "crack", "pit", "z_crack_masks", "a_pit_masks"):
        (tmp_path / folder).mkdir()
    for image in TRAIN[:4]:
        shutil.copy(image, tmp_path / "good" / image.name)
    for defect, images in source.items():
        for k, image in enumerate(images):
            shutil.copy(image, tmp_path / defect / f"{k:03d}.png")
            masks = "z_crack_masks" if defect == "crack" else "a_pit_masks"
            shutil.copy(mask_of(image), tmp_path / masks / f"{k:03d}_mask.png")
    data = setup_folder(
        tmp_path, normal_dir="good", abnormal_dir=["crack", "pit"], mask_dir=["z_crack_masks", "a_pit_masks"]
    )
    samples = data.test_data.samples.set_index("image_path")
    items = {data.test_data[i].image_path: data.test_data[i] for i in range(len(data.test_data))}
    for defect, images in source.items():
        for k, image in enumerate(images):
            path = str(tmp_path / defect / f"{k:03d}.png")
            assert Path(samples.loc[path, "mask_path"]).parent.name.endswith(f"{defect}_masks")
            assert np.array_equal(items[path].gt_mask.numpy().astype(bool), clean_mask(image))


def test_folder_refuses_a_mask_shared_by_two_images(tmp_path: Path) -> None:
    """``crack/000.png`` and ``pit/000.png`` with one mask ``000_mask.png``: which image it belongs to is unknown."""
    for folder in ("good", "crack", "pit", "masks"):
        (tmp_path / folder).mkdir()
    shutil.copy(TRAIN[0], tmp_path / "good" / "a.png")
    shutil.copy(PITTING[0], tmp_path / "crack" / "000.png")
    shutil.copy(PITTING[1], tmp_path / "pit" / "000.png")
    shutil.copy(mask_of(PITTING[0]), tmp_path / "masks" / "000_mask.png")
    with pytest.raises(ValueError, match=r"000_mask\.png matches several images: .*crack/000\.png.*pit/000\.png"):
        setup_folder(tmp_path, normal_dir="good", abnormal_dir=["crack", "pit"], mask_dir="masks")


def test_missing_mask_is_named(tmp_path: Path) -> None:
    """One mask deleted: an error naming the image and the mask expected (anomalib: NumPy/pandas length error)."""
    (tmp_path / "good").mkdir()
    (tmp_path / "defective").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(TRAIN[0], tmp_path / "good" / "a.png")
    for name, image in zip(("1", "2", "10"), PITTING[:3], strict=True):
        shutil.copy(image, tmp_path / "defective" / f"{name}.png")
        if name != "2":
            shutil.copy(mask_of(image), tmp_path / "masks" / f"{name}_mask.png")
    with pytest.raises(ValueError, match=r"no mask for the defective image .*defective/2\.png: expected 2_mask"):
        setup_folder(tmp_path, normal_dir="good", abnormal_dir="defective", mask_dir="masks")
    category = mvtec(tmp_path / "mvtec")
    (category / "ground_truth" / "pitting" / mask_of(PITTING[1]).name).unlink()
    with pytest.raises(ValueError, match=rf"no mask for the defective image .*{PITTING[1].name}: expected .*_mask"):
        setup_mvtec(tmp_path / "mvtec")


def test_mask_of_another_size_is_named(tmp_path: Path) -> None:
    category = mvtec(tmp_path)
    mask = category / "ground_truth" / "pitting" / mask_of(PITTING[0]).name
    Image.open(mask).resize((256, 256)).save(mask)
    with pytest.raises(ValueError, match=rf"mask .*{mask.name} is 256 x 256 pixels but its image .* is 512 x 208"):
        setup_mvtec(tmp_path)


@pytest.mark.parametrize("datamodule", ["MVTecAD", "Folder"])
def test_hidden_and_system_files_are_skipped_with_a_note(
    tmp_path: Path, datamodule: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Jupyter checkpoints, macOS AppleDouble ``._*.png`` files, ``.DS_Store`` and ``Thumbs.db`` in the image and mask
    folders: skipped and logged; every real image is used and readable (anomalib: TypeError or an unreadable sample)."""
    category = mvtec(tmp_path)
    (category / "train" / "good" / ".ipynb_checkpoints").mkdir()
    shutil.copy(TRAIN[0], category / "train" / "good" / ".ipynb_checkpoints" / "000-checkpoint.png")
    for folder in ("train/good", "test/pitting", "ground_truth/pitting"):
        for image in list((category / folder).glob("*.png"))[:1]:
            (image.parent / f"._{image.name}").write_bytes(APPLE_DOUBLE)
        (category / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
        (category / folder / "Thumbs.db").write_bytes(bytes(64))
    with caplog.at_level(logging.INFO, logger="anomalib_ssimae.data.folders"):
        if datamodule == "MVTecAD":
            data = setup_mvtec(tmp_path)
        else:
            folders = {"normal_dir": "train/good", "abnormal_dir": "test/pitting", "mask_dir": "ground_truth/pitting"}
            data = setup_folder(category, normal_test_dir="test/good", **folders)
    assert "skipped 10 hidden or non-image files" in caplog.text
    assert "._" in caplog.text
    assert "000-checkpoint.png" in caplog.text
    train = sorted(Path(p).name for p in data.train_data.samples.image_path)
    assert train == sorted(p.name for p in TRAIN[:4])
    masks = masks_by_image(data.test_data)
    assert sorted(masks) == sorted(p.name for p in PITTING[:3])
    for image in PITTING[:3]:
        assert np.array_equal(masks[image.name], clean_mask(image))


def test_all_image_suffixes_are_found(tmp_path: Path) -> None:
    """12 training images as .png, .PNG, .Png, .JPG, .jpg, .jpeg, .bmp, .BMP, .tif, .TIFF, .webp, .png: all 12 are
    used (anomalib's MVTecAD reads .png/.PNG only); .bmp masks pair with their images (anomalib: pandas error)."""
    category = mvtec(tmp_path, n_train=12)
    suffixes = [".png", ".PNG", ".Png", ".JPG", ".jpg", ".jpeg", ".bmp", ".BMP", ".tif", ".TIFF", ".webp", ".png"]
    for image, suffix in zip(TRAIN[:12], suffixes, strict=True):
        target = category / "train" / "good" / f"{image.stem}{suffix}"
        Image.open(image).save(target, format=Image.registered_extensions()[suffix.lower()])
        if suffix != ".png":
            (category / "train" / "good" / image.name).unlink()
    for mask in (category / "ground_truth" / "pitting").glob("*.png"):
        Image.open(mask).save(mask.with_suffix(".bmp"))
        mask.unlink()
    data = setup_mvtec(tmp_path)
    train = sorted(Path(p).stem for p in data.train_data.samples.image_path)
    assert train == sorted(p.stem for p in TRAIN[:12])
    assert len(data.train_data[3].image.shape) == 3  # readable
    masks = masks_by_image(data.test_data)
    for image in PITTING[:3]:
        assert np.array_equal(masks[image.name], clean_mask(image))


def test_without_ground_truth_image_metrics_only(tmp_path: Path) -> None:
    """No ``ground_truth/``: a classification set, with a warning that pixel metrics cannot be computed (anomalib:
    pandas length error)."""
    category = mvtec(tmp_path)
    shutil.rmtree(category / "ground_truth")
    with pytest.warns(UserWarning, match="have no masks .*pixel AUROC, AUPRO and pixel F1 cannot be computed"):
        data = setup_mvtec(tmp_path)
    assert data.test_data.task == "classification"
    labels = sorted(int(data.test_data[i].gt_label) for i in range(len(data.test_data)))
    assert labels == [0, 0, 1, 1, 1]
    assert data.test_data[0].gt_mask is None


def test_only_good_test_images_warns(tmp_path: Path) -> None:
    """Only defect-free test images: a warning that no metric can be computed (anomalib printed 0.0 for all)."""
    category = mvtec(tmp_path, pitting=[])
    shutil.rmtree(category / "test" / "pitting")
    with pytest.warns(UserWarning, match="are all defect-free: image and pixel metrics .* cannot be computed"):
        setup_mvtec(tmp_path)


def anti_aliased(clean: np.ndarray) -> np.ndarray:
    """The mask drawn at 4x resolution a quarter pixel off and area-averaged: edge pixels get the fraction of the
    pixel inside the defect, >= 9/16 inside and <= 7/16 outside, so the clean mask is the pixels >= half."""
    fine = np.kron(clean.astype(np.float64), np.ones((4, 4)))
    fine = np.pad(fine, ((1, 0), (1, 0)))[:-1, :-1]
    height, width = clean.shape
    return np.round(fine.reshape(height, 4, width, 4).mean(axis=(1, 3)) * 255).astype(np.uint8)


def write_mask(clean: np.ndarray, variant: str, path: Path) -> Path:
    """``clean`` stored as ``variant``; returns the file written (its suffix may change)."""
    if variant == "0-1":
        Image.fromarray(clean.astype(np.uint8)).save(path)
    elif variant == "0-255":
        Image.fromarray(clean.astype(np.uint8) * 255).save(path)
    elif variant == "grey levels":  # two defect classes: the left part of the region 100, the right part 255
        columns = np.nonzero(clean.any(axis=0))[0]
        split = columns[len(columns) // 2]
        levels = np.where(np.arange(clean.shape[1]) < split, 100, 255)[None, :] * clean
        Image.fromarray(levels.astype(np.uint8)).save(path)
    elif variant == "anti-aliased":
        Image.fromarray(anti_aliased(clean)).save(path)
    elif variant == "16-bit":
        Image.fromarray(clean.astype(np.uint16) * 65535).save(path)
    elif variant == "dark palette":  # index 1 = (1, 0, 0): PIL's convert("L") makes it 0
        palette = Image.fromarray(clean.astype(np.uint8), mode="P")
        palette.putpalette([0, 0, 0, 1, 0, 0])
        palette.save(path)
    elif variant == "alpha":  # black everywhere, the defect opaque
        rgba = np.zeros((*clean.shape, 4), np.uint8)
        rgba[..., 3] = clean * 255
        Image.fromarray(rgba).save(path)
    elif variant == "jpeg":
        path = path.with_suffix(".jpg")
        Image.fromarray(clean.astype(np.uint8) * 255).save(path, quality=90)
    return path


VARIANTS = ["0-1", "0-255", "grey levels", "anti-aliased", "16-bit", "dark palette", "alpha", "jpeg"]
LARGE = [p for p in PITTING if clean_mask(p).sum() > 250][:4]  # defects large enough for a grey-level split


@pytest.fixture(scope="module")
def clean_pixel_auroc() -> float:
    """Pixel AUROC of a fixed map (darkness) against the clean masks of ``LARGE`` + 2 good images."""
    images = [*LARGE, *GOOD[:2]]
    masks = [clean_mask(p) if p in LARGE else np.zeros((208, 512), bool) for p in images]
    return pixel_auroc(images, masks)


def pixel_auroc(images: list[Path], masks: list[np.ndarray]) -> float:
    darkness = torch.stack(
        [1 - torch.from_numpy(np.asarray(Image.open(p).convert("L"), np.float32) / 255) for p in images]
    )
    metric = AUROC(fields=["anomaly_map", "gt_mask"])
    metric.update(SimpleNamespace(anomaly_map=darkness, gt_mask=torch.from_numpy(np.stack(masks))))
    return float(metric.compute())


@pytest.mark.parametrize("variant", VARIANTS)
def test_mask_encodings_give_the_clean_mask(tmp_path: Path, variant: str, clean_pixel_auroc: float) -> None:
    """Masks as {0, 1}, {0, 255}, two grey levels, anti-aliased edges, 16-bit, a dark palette colour, alpha only,
    JPEG: each test item's mask equals the clean binary mask, so pixel AUROC equals the clean masks' value."""
    category = mvtec(tmp_path, pitting=LARGE)
    for image in LARGE:
        path = category / "ground_truth" / "pitting" / mask_of(image).name
        path.unlink()
        write_mask(clean_mask(image), variant, path)
    data = setup_mvtec(tmp_path)
    masks = masks_by_image(data.test_data)
    for image in LARGE:
        assert np.array_equal(masks[image.name], clean_mask(image)), image.name
    items = [data.test_data[i] for i in range(len(data.test_data))]
    auroc = pixel_auroc(
        [Path(item.image_path) for item in items], [item.gt_mask.numpy().astype(bool) for item in items]
    )
    assert auroc == pytest.approx(clean_pixel_auroc, abs=1e-6)
    assert 0.5 < clean_pixel_auroc < 1


@pytest.mark.parametrize(("variant", "extra"), [("anti-aliased", True), ("dark palette", False), ("alpha", False)])
def test_what_anomalib_reads_instead(tmp_path: Path, variant: str, extra: bool) -> None:
    """Why the masks are read anew: anomalib's ``convert("L") > 0`` adds the outer edge ring of an anti-aliased mask
    and reads a dark palette colour or an alpha-only mask as no defect at all."""
    clean = clean_mask(LARGE[0])
    path = write_mask(clean, variant, tmp_path / "mask.png")
    by_anomalib = read_mask(path, as_tensor=True).numpy().astype(bool)
    if extra:
        assert by_anomalib.sum() > clean.sum() and (by_anomalib | clean).sum() == by_anomalib.sum()
    else:
        assert not by_anomalib.any()
    assert np.array_equal(read_binary_mask(path), clean)


def test_yaml_class_path(tmp_path: Path) -> None:
    """``class_path: anomalib_ssimae.data.Folder`` in a data config builds the datamodule with anomalib's arguments."""
    category = mvtec(tmp_path)
    config = tmp_path / "data.yaml"
    config.write_text(
        "class_path: anomalib_ssimae.data.Folder\n"
        f"init_args: {{name: part, root: {category}, normal_dir: train/good, normal_test_dir: test/good, "
        "abnormal_dir: test/pitting, mask_dir: ground_truth/pitting, val_split_mode: none, num_workers: 0, seed: 42}\n"
    )
    data = AnomalibDataModule.from_config(config)
    assert type(data) is Folder
    data.setup()
    masks = masks_by_image(data.test_data)
    assert all(np.array_equal(masks[image.name], clean_mask(image)) for image in PITTING[:3])


def test_mvtec_train_holds_only_good(tmp_path: Path) -> None:
    """Defective images under ``train/`` would be trained on: refused, naming the folder."""
    category = mvtec(tmp_path)
    (category / "train" / "pitting").mkdir()
    shutil.copy(PITTING[5], category / "train" / "pitting" / PITTING[5].name)
    with pytest.raises(ValueError, match=r"train/pitting: the MVTec AD layout trains on train/good/ only"):
        setup_mvtec(tmp_path)


def test_find_images_skips_hidden_files(tmp_path: Path) -> None:
    """``ssimae-predict``'s folder listing skips AppleDouble files and checkpoint folders too."""
    shutil.copy(GOOD[0], tmp_path / "a.png")
    (tmp_path / "._a.png").write_bytes(APPLE_DOUBLE)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    shutil.copy(GOOD[0], tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png")
    assert find_images(tmp_path) == [tmp_path / "a.png"]
