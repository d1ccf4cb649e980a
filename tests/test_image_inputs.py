"""Input kinds on every path (issue 10): TIFF (8 and 16 bits), mixed modes in one training folder, transparency,
small images (enlarged), empty folders, mixed-case suffixes.

The paths: the package's datamodules (``anomalib_ssimae.data.MVTecAD`` items, and the image check of ``on_fit_start``
:func:`check_datamodule_images`), ``ssimae-predict`` (:func:`predict_folder`, fed to a stand-in detector that keeps
its inputs) and ``anomalib predict`` (``Engine.predict(data_path=...)`` with an untrained 128 x 128 SsimAe: anomalib's
``PredictDataset`` reads the files, the model's ``on_predict_start`` checks them). Inputs are built in ``tmp_path``
from a real 512 x 208 BSData image of the embedded data.

What anomalib 2.7 did (2026-11-30): a 16-bit gray TIFF (PIL ``I;16``, ``I;16B``) read as white, a float TIFF as
black, an RGBA image's transparent area as whatever colour lay under it, all without a word.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
import torch
from anomalib.data.utils import read_image
from anomalib.engine import Engine
from PIL import Image

from anomalib_ssimae import SsimAe
from anomalib_ssimae.data.images import check_datamodule_images, check_image_files, read_rgb
from anomalib_ssimae.deploy import cli, predict_folder
from anomalib_ssimae.models.ssim_ae.torch_model import to_model_channels

from .data_builders import (
    APPLE_DOUBLE,
    PITTING,
    clean_mask,
    masks_by_image,
    mvtec,
    setup_folder,
    setup_mvtec,
)
from .helpers import EMBEDDED

SOURCE = Image.open(min((EMBEDDED / "train" / "good").glob("*.png"))).convert("RGB")  # real colour, 512 x 208
GRAY = SOURCE.convert("L")


class RecordingDetector:
    """Stands in for :class:`OpenVinoDetector` in :func:`predict_folder`: keeps the array each file gave (what
    OpenVINO would be fed) and scores an image by its mean value."""

    def __init__(self) -> None:
        self.image_size, self.thresholds = None, {"image": None, "pixel": None}
        self.inputs: dict[str, np.ndarray] = {}

    def imap(self, items: Iterable[tuple[Any, np.ndarray | None]], jobs: int = 2) -> Iterator[tuple[Any, Any]]:
        del jobs
        for key, image in items:
            if image is not None:
                self.inputs[key[0].name] = image
                gray = image.mean(axis=1)
                image = {
                    "pred_score": np.array([image.mean()]),
                    "anomaly_map": gray,
                    "pred_label": np.array([False]),
                    "pred_mask": gray > 2,  # no region
                }
            yield key, image


def ssimae_predict(folder: Path, out: Path) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """:func:`predict_folder` on ``folder``: records and detector inputs by file name."""
    detector = RecordingDetector()
    lines = predict_folder(detector, folder, out).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {Path(r["image"]).name: r for r in records}, detector.inputs


def anomalib_predict(folder: Path, root: Path, in_channels: int = 1) -> dict[str, torch.Tensor]:
    """``anomalib predict --data_path FOLDER`` in-process with an untrained 128 x 128 SsimAe: maps by file name."""
    model = SsimAe(image_size=128, in_channels=in_channels, visualizer=False, seed=0)
    engine = Engine(accelerator="auto", devices=1, logger=False, default_root_dir=root, enable_progress_bar=False)
    batches = engine.predict(model=model, data_path=folder)
    return {Path(p).name: m for b in batches for p, m in zip(b.image_path, b.anomaly_map, strict=True)}


def training_folder(root: Path, images: dict[str, Image.Image | bytes]) -> Path:
    """``root/part`` in the MVTec AD layout (2 good and 3 pitting test images with masks) whose ``train/good``
    holds ``images`` (name -> picture, or the bytes of a file)."""
    category = mvtec(root, n_train=0)
    for name, image in images.items():
        target = category / "train" / "good" / name
        if isinstance(image, bytes):
            target.write_bytes(image)
        else:
            image.save(target)
    return category


def train_items(root: Path) -> dict[str, torch.Tensor]:
    """The training images the package's MVTecAD yields, by file name: ``(3, H, W)``."""
    data = setup_mvtec(root)
    dataset = data.train_data
    return {Path(dataset[i].image_path).name: dataset[i].image for i in range(len(dataset))}


def png_bytes(image: Image.Image, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


# ---------------------------------------------------------------- TIFF
def eight_bit_tiffs() -> dict[str, bytes | Image.Image]:
    """The source's pixels as TIFF: what each must read as is ``expected.png``'s (the PNG of the same pixels)."""
    rgb = np.asarray(SOURCE)
    lzw = io.BytesIO()
    SOURCE.save(lzw, format="TIFF", compression="tiff_lzw")
    return {
        "expected.png": SOURCE,
        "rgb.tif": SOURCE,  # PIL, uncompressed
        "rgb_lzw.tiff": lzw.getvalue(),
        "rgb_planar.tif": tiff_bytes(rgb.transpose(2, 0, 1).copy(), photometric="rgb", planarconfig="separate"),
        "rgb_16bit.tif": tiff_bytes(rgb.astype(np.uint16) * 257, photometric="rgb"),  # PIL keeps the high byte
        # 16-bit RGB PNG (OpenCV writes it; BGR order): the low byte 255 must not round up, the high byte is kept
        "rgb_16bit.png": cv2.imencode(".png", (rgb.astype(np.uint16) * 256 + 255)[:, :, ::-1].copy())[1].tobytes(),
    }


def assert_refused_on_every_path(path: Path, error: str, tmp_path: Path) -> dict[str, dict]:
    """``path`` (in the MVTec train folder beside ``a.png``) is refused with ``error`` by the image check, the reader,
    the datamodule check that runs before training and the datamodule item itself (whichever model trains);
    ``ssimae-predict`` and ``anomalib predict`` predict only ``a.png`` (and record the file's error). Returns
    ``ssimae-predict``'s records."""
    with pytest.raises(ValueError, match=error):
        check_image_files([path])
    with pytest.raises(ValueError, match=error):
        read_rgb(path)
    data = setup_mvtec(tmp_path / "data")
    with pytest.raises(ValueError, match=error):  # on_fit_start's check, before any training
        check_datamodule_images(data, "train_data")
    index = [Path(p).name for p in data.train_data.samples.image_path].index(path.name)
    with pytest.raises(ValueError, match=error):  # the item itself, whichever model trains
        data.train_data[index]
    records, inputs = ssimae_predict(path.parent, tmp_path / "predict")
    assert list(inputs) == ["a.png"]
    assert list(anomalib_predict(path.parent, tmp_path / "anomalib")) == ["a.png"]  # the file gets an error record
    return records


def test_8_bit_tiff_reads_as_the_png_of_the_same_pixels_on_every_path(tmp_path: Path) -> None:
    """8-bit RGB TIFF (uncompressed, LZW, planar), 16-bit RGB TIFF and 16-bit RGB PNG of the same pixels give
    exactly the 8-bit PNG's values to training, ``ssimae-predict`` and ``anomalib predict``; a gray TIFF gives the
    gray PNG's."""
    files = eight_bit_tiffs() | {"gray.png": GRAY, "gray.tif": GRAY}
    category = training_folder(tmp_path / "data", files)
    expected = read_image(category / "train" / "good" / "expected.png", as_tensor=True)  # anomalib's PNG reading
    assert expected.shape == (3, 208, 512) and float(expected.std()) > 0.05  # a real picture
    items = train_items(tmp_path / "data")
    records, inputs = ssimae_predict(category / "train" / "good", tmp_path / "predict")
    maps = anomalib_predict(category / "train" / "good", tmp_path / "anomalib", in_channels=3)
    for name in ("rgb.tif", "rgb_lzw.tiff", "rgb_planar.tif", "rgb_16bit.tif", "rgb_16bit.png"):
        assert torch.equal(items[name], expected), name
        assert np.array_equal(inputs[name], inputs["expected.png"]), name
        assert records[name]["anomaly_score"] == records["expected.png"]["anomaly_score"]
        assert (records[name]["width"], records[name]["height"]) == (512, 208)
        assert torch.equal(maps[name], maps["expected.png"]), name
    assert torch.equal(items["gray.tif"], items["gray.png"])
    assert torch.allclose(items["gray.tif"][0], torch.from_numpy(np.asarray(GRAY) / np.float32(255)), atol=1e-6)
    assert np.allclose(inputs["expected.png"][0], expected.numpy(), atol=1e-6)
    assert np.array_equal(inputs["gray.tif"], inputs["gray.png"])
    assert torch.equal(maps["gray.tif"], maps["gray.png"])


GRAY_16 = np.asarray(GRAY).astype(np.uint16) * 257
SIXTEEN_BIT = {  # name -> (the gray source as that file's pixels, PIL mode)
    "le.tif": (GRAY_16, "I;16"),
    "be.tif": (GRAY_16.astype(">u2"), "I;16B"),
    "int32.tif": (GRAY_16.astype(np.int32), "I"),
    "float.tif": (np.asarray(GRAY, dtype=np.float32) / 255, "F"),
}


@pytest.mark.parametrize("name", SIXTEEN_BIT)
def test_16_bit_gray_and_float_tiff_are_refused_on_every_path(tmp_path: Path, name: str) -> None:
    """A 16-bit gray (little- and big-endian), 32-bit or float TIFF gets the 16-bit PNG's error, naming the file, on
    every path (anomalib: white or black); the conversion the error proposes gives the 8-bit pixels back."""
    array, mode = SIXTEEN_BIT[name]
    category = training_folder(tmp_path / "data", {"a.png": SOURCE, name: Image.fromarray(array)})
    path = category / "train" / "good" / name
    assert Image.open(path).mode == mode
    anomalib = read_image(path)
    if mode == "F":
        assert anomalib.max() <= 1 / 255  # anomalib: black
    else:
        assert (anomalib == 1).mean() > 0.99  # anomalib: white
    error = rf"image .*{name.replace('.', '[.]')} has PIL mode {mode} \(16-bit or float\)"
    records = assert_refused_on_every_path(path, error, tmp_path)
    assert records[name]["error"].startswith(f"image {path} has PIL mode {mode}")
    fixed = (
        Image.open(path).point(lambda v: v * 255).convert("L")
        if mode == "F"
        else Image.open(path).convert("I").point(lambda v: v / 256).convert("L")
    )
    assert np.abs(np.asarray(fixed, dtype=int) - np.asarray(GRAY)).max() <= (1 if mode == "F" else 0)


# ---------------------------------------------------------------- mixed modes
def mixed_modes() -> dict[str, Image.Image | bytes]:
    """The gray source in every mode a training folder may mix, plus the colour source and its gray copy."""
    gray = np.asarray(GRAY)
    palette = Image.frombytes("P", GRAY.size, (255 - gray).tobytes())  # index i is gray level 255 - i
    palette.putpalette([level for i in range(256) for level in (255 - i,) * 3])
    opaque_alpha = Image.new("L", GRAY.size, 255)
    unused = int(np.setdiff1d(np.arange(256), 255 - gray)[0])  # a palette entry no pixel uses
    return {
        "l.png": GRAY,
        "rgb.png": GRAY.convert("RGB"),
        "p.png": palette,
        "p_unused_transparent.png": png_bytes(palette, transparency=unused),
        "rgba.png": Image.merge("RGBA", [GRAY, GRAY, GRAY, opaque_alpha]),
        "la.png": Image.merge("LA", [GRAY, opaque_alpha]),
        "colour.png": SOURCE,
        "colour_as_l.png": GRAY,  # PIL's integer luma of colour.png
    }


def test_mixed_modes_in_one_training_folder_match_the_gray_copy(tmp_path: Path) -> None:
    """Gray, RGB, palette (indices != values), opaque RGBA and gray+alpha copies of one image in one training
    folder give a grayscale model (``in_channels: 1``) exactly the gray copy's input on every path; a colour image
    gives its PIL gray copy's within 1/255 (float luma vs PIL's rounded luma)."""
    files = mixed_modes()
    category = training_folder(tmp_path / "data", files)
    modes = {name: Image.open(category / "train" / "good" / name).mode for name in files}
    assert modes["p.png"] == "P" and modes["rgba.png"] == "RGBA" and modes["la.png"] == "LA"
    model = SsimAe(image_size=[208, 512], in_channels=1, visualizer=False)

    def network_input(image: torch.Tensor | np.ndarray) -> torch.Tensor:  # the pre-processor, then the model
        image = torch.as_tensor(image).reshape(1, 3, 208, 512)
        return to_model_channels(model.pre_processor.transform(image), model.model.in_channels)

    items = {name: network_input(image) for name, image in train_items(tmp_path / "data").items()}
    records, inputs = ssimae_predict(category / "train" / "good", tmp_path / "predict")
    inputs = {name: network_input(image) for name, image in inputs.items()}
    maps = anomalib_predict(category / "train" / "good", tmp_path / "anomalib")
    expected = torch.from_numpy(np.asarray(GRAY) / np.float32(255))
    for name in files:
        assert "error" not in records[name], name
        tolerance = 1 / 255 if name == "colour.png" else 1e-6
        for path_input in (items[name], inputs[name]):
            assert path_input.shape == (1, 1, 208, 512)
            assert float((path_input[0, 0] - expected).abs().max()) <= tolerance, name
        if name != "colour.png":
            assert torch.allclose(maps[name], maps["l.png"], atol=1e-6), name
    assert float((items["colour.png"] - items["colour_as_l.png"]).abs().mean()) > 0  # not trivially equal


# ---------------------------------------------------------------- transparency
LEFT = 100  # columns made transparent: a cut-out's background


def transparent_files() -> dict[str, tuple[bytes | Image.Image, int]]:
    """Images with transparent pixels -> (file, number of pixels with alpha < 255). Under alpha 0 lies the real
    picture, which anomalib would read as if visible."""
    height, width = GRAY.height, GRAY.width
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, :LEFT] = 0
    soft = np.full((height, width), 255, np.uint8)
    soft[50:60, 200:210] = 128  # semi-transparent: a blend, also refused
    key = int(np.asarray(GRAY)[0, 0])  # a PNG tRNS gray key: every pixel of that value is transparent
    palette = GRAY.convert("P")  # gray palette, index = value
    rgba = np.dstack([np.asarray(SOURCE), alpha])
    return {
        "rgba.png": (Image.fromarray(rgba), height * LEFT),
        "rgba.tif": (Image.fromarray(rgba), height * LEFT),
        "rgba_soft.png": (Image.fromarray(np.dstack([np.asarray(SOURCE), soft])), 100),
        "la.png": (Image.merge("LA", [GRAY, Image.fromarray(alpha)]), height * LEFT),
        "l_key.png": (png_bytes(GRAY, transparency=key), int((np.asarray(GRAY) == key).sum())),
        "p_key.png": (png_bytes(palette, transparency=key), int((np.asarray(GRAY) == key).sum())),
    }


@pytest.mark.parametrize("name", transparent_files())
def test_transparent_pixels_are_refused_on_every_path(tmp_path: Path, name: str) -> None:
    """RGBA, gray+alpha, and PNG transparency keys with transparent pixels: the same error, naming the file and
    counting the pixels, on every path (anomalib dropped the alpha: the left 100 columns read as the picture under
    them); the flattening the error proposes gives black there and the picture elsewhere."""
    image, count = transparent_files()[name]
    category = training_folder(tmp_path / "data", {"a.png": SOURCE, name: image})
    path = category / "train" / "good" / name
    opened = Image.open(path)
    if name in ("rgba.png", "rgba.tif", "la.png"):  # anomalib reads the picture under alpha 0 as if visible
        under = np.asarray(opened.convert("RGB"))[:, :LEFT] / np.float32(255)
        assert np.allclose(read_image(path)[:, :LEFT], under) and under.std() > 0.05
    assert count > 0
    error = rf"image .*{name.replace('.', '[.]')} has transparent pixels \({count} of {512 * 208} with alpha < 255\)"
    records = assert_refused_on_every_path(path, error, tmp_path)
    assert "transparent pixels" in records[name]["error"]
    flat = Image.alpha_composite(Image.new("RGBA", opened.size, "black"), opened.convert("RGBA")).convert("RGB")
    flat.save(path.with_name("flat.png"))
    values, _ = read_rgb(path.with_name("flat.png"))
    visible = np.asarray(opened.convert("RGBA"))
    expected = visible[..., :3] * (visible[..., 3:] / 255)  # black under alpha 0, blended under alpha 128
    assert np.abs(values * 255 - expected).max() <= 1
    if name in ("rgba.png", "rgba.tif", "la.png"):
        assert values[:, :LEFT].max() == 0 and values[:, LEFT:].std() > 0.05


# ---------------------------------------------------------------- hidden and system files
REAL = sorted((EMBEDDED / "test" / "good").glob("*.png"))[:2]  # two real 512 x 208 defect-free images


def predict_folders(root: Path) -> tuple[Path, Path]:
    """``clean/`` with the two real images, and ``messy/`` with the same plus what macOS, Windows and Jupyter
    leave: ``._<name>`` (AppleDouble, not a PNG), ``.DS_Store``, ``Thumbs.db`` and
    ``.ipynb_checkpoints/<stem>-checkpoint.png`` (a copy of the first image)."""
    clean, messy = root / "clean", root / "messy"
    for folder in (clean, messy):
        folder.mkdir(parents=True)
        for image in REAL:
            shutil.copy(image, folder / image.name)
    (messy / f"._{REAL[0].name}").write_bytes(APPLE_DOUBLE)
    (messy / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (messy / "Thumbs.db").write_bytes(bytes(64))
    (messy / ".ipynb_checkpoints").mkdir()
    shutil.copy(REAL[0], messy / ".ipynb_checkpoints" / f"{REAL[0].stem}-checkpoint.png")
    return clean, messy


def anomalib_scores(path: Path, root: Path) -> dict[Path, float]:
    """``anomalib predict --data PATH`` in-process with an untrained 128 x 128 SsimAe (seeded): scores by path."""
    model = SsimAe(image_size=128, visualizer=False, seed=0)
    engine = Engine(accelerator="auto", devices=1, logger=False, default_root_dir=root, enable_progress_bar=False)
    batches = engine.predict(model=model, data_path=path)
    return {Path(p): float(s) for b in batches for p, s in zip(b.image_path, b.pred_score, strict=True)}


def test_anomalib_predict_skips_hidden_and_system_files_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder's two images are predicted, scored as in a clean folder; the ``._`` file (anomalib 2.7: the run
    failed on it) and the checkpoint copy (scored as a third image) are skipped with one note. A file or folder
    given inside a hidden folder is predicted; a folder of hidden files only is refused, naming one."""
    clean, messy = predict_folders(tmp_path / "in")
    checkpoint = messy / ".ipynb_checkpoints" / f"{REAL[0].stem}-checkpoint.png"
    expected = anomalib_scores(clean, tmp_path / "out")
    assert sorted(p.name for p in expected) == [p.name for p in REAL]
    assert len(set(expected.values())) == 2
    with caplog.at_level(logging.INFO, logger="anomalib_ssimae.data.images"):
        scores = anomalib_scores(messy, tmp_path / "out")
    assert scores == {messy.resolve() / p.name: expected[clean.resolve() / p.name] for p in expected}
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    skipped = [messy.resolve() / f"._{REAL[0].name}", messy.resolve() / ".ipynb_checkpoints" / checkpoint.name]
    assert notes == [f"skipped 2 hidden files under {messy.resolve()}: {skipped[0]}, {skipped[1]}"]

    # a file given alone, or a folder inside a hidden one, is the user's choice: predicted (its ._ file is not)
    (checkpoint.parent / f"._{checkpoint.name}").write_bytes(APPLE_DOUBLE)
    for given in (checkpoint, checkpoint.parent):
        assert anomalib_scores(given, tmp_path / "out") == {
            checkpoint.resolve(): expected[clean.resolve() / REAL[0].name]
        }
    only_hidden = tmp_path / "in" / "only_hidden"
    only_hidden.mkdir()
    for image in REAL:
        (only_hidden / f"._{image.name}").write_bytes(APPLE_DOUBLE)
    with pytest.raises(ValueError, match=r"only_hidden: only hidden files to predict \(e\.g\. .*/only_hidden/\._"):
        anomalib_scores(only_hidden, tmp_path / "out")


def test_ssimae_predict_skips_hidden_and_system_files_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``ssimae-predict`` on the same folders: the two images, with the clean folder's inputs and scores; one note
    counting the four other files."""
    clean, messy = predict_folders(tmp_path / "in")
    expected, expected_inputs = ssimae_predict(clean, tmp_path / "clean_out")
    with caplog.at_level(logging.INFO, logger="anomalib_ssimae.data.images"):
        records, inputs = ssimae_predict(messy, tmp_path / "messy_out")
    assert sorted(records) == sorted(inputs) == [p.name for p in REAL]
    for name, record in records.items():
        assert record["image"] == str(messy / name)
        assert record["anomaly_score"] == expected[name]["anomaly_score"] > 0
        assert np.array_equal(inputs[name], expected_inputs[name])
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(notes) == 1
    assert notes[0].startswith(f"skipped 4 hidden or non-image files under {messy}: ")
    for name in (".DS_Store", "Thumbs.db", f"._{REAL[0].name}", f"{REAL[0].stem}-checkpoint.png"):
        assert name in notes[0]


# ---------------------------------------------------------------- small images in training and test data
def test_small_training_images_get_one_warning_per_dataset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 10 x 10 and a 64 x 64 copy of a real image among the training images: the check before training names how
    many are enlarged more than 2 times and the most enlarged one, with its factor; 512 x 208 images (the rest of
    the training set and the test set) give no warning. anomalib enlarged them without a word."""
    small = {"tiny.png": SOURCE.resize((10, 10)), "small.png": SOURCE.resize((64, 64))}
    category = training_folder(tmp_path / "data", {"a.png": SOURCE, **small})
    data = setup_mvtec(tmp_path / "data")
    data.trainer = SimpleNamespace(lightning_module=SsimAe(image_size=256, visualizer=False))  # as in on_fit_start
    with caplog.at_level(logging.WARNING):
        check_datamodule_images(data, "train_data", "test_data")
        check_datamodule_images(data, "train_data", image_size=(128, 128))  # 128 / 64 = 2: the limit
    messages = [r.getMessage() for r in caplog.records if "enlarged" in r.getMessage()]
    warned = [message.split(" to the model's")[0] for message in messages]
    tiny = category / "train" / "good" / "tiny.png"
    assert warned == [
        f"2 images are enlarged more than 2 times, e.g. {tiny}: 10 x 10 (width x height) is enlarged 25.6 times",
        f"{tiny}: 10 x 10 (width x height) is enlarged 12.8 times",
    ]
    assert "image_size 256 x 256; more than 2 times gives unreliable scores" in messages[0]


# ---------------------------------------------------------------- empty folders
def empty_folder(path: Path) -> Path:
    """A folder holding no image: only a macOS ``._`` file and a ``Thumbs.db`` (what an "empty" copy often holds)."""
    path.mkdir(parents=True)
    (path / "._a.png").write_bytes(APPLE_DOUBLE)
    (path / "Thumbs.db").write_bytes(b"not an image")
    return path


def test_empty_folders_are_named_by_the_datamodules(tmp_path: Path) -> None:
    """An MVTec AD ``train/good`` that is empty or missing and each empty Folder argument: ``FileNotFoundError``
    naming the folder, before any training."""
    suffixes = r"\(\.bmp, \.jpeg, \.jpg, \.png, \.tif, \.tiff, \.webp, any case\)"
    category = mvtec(tmp_path / "empty", n_train=0)
    empty_folder(category / "train" / "good" / "sub")
    with pytest.raises(FileNotFoundError, match=rf"^no training images in {category / 'train' / 'good'} {suffixes}"):
        setup_mvtec(tmp_path / "empty")
    shutil.rmtree(category / "train")  # a wrong --data.category or root
    with pytest.raises(FileNotFoundError, match=rf"^no training images in {category / 'train' / 'good'} "):
        setup_mvtec(tmp_path / "empty")
    root = mvtec(tmp_path / "folder")
    empty = empty_folder(tmp_path / "folder" / "nothing")
    full = {"normal_dir": "train/good", "abnormal_dir": "test/pitting", "normal_test_dir": "test/good"}
    for argument, kind in (("normal_dir", "normal"), ("abnormal_dir", "abnormal"), ("normal_test_dir", "normal_test")):
        folders = {**full, argument: ["../nothing"] if argument == "abnormal_dir" else "../nothing"}
        with pytest.raises(FileNotFoundError, match=rf"^no {kind} images in {empty} {suffixes}"):
            setup_folder(root, **folders)


def test_ssimae_predict_names_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``ssimae-predict MODEL EMPTY OUT``: exit status 2, one line naming the folder, and no output folder."""
    monkeypatch.setattr(cli, "OpenVinoDetector", lambda *_: RecordingDetector())
    empty = empty_folder(tmp_path / "in")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["model.xml", str(empty), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ssimae-predict: error: {empty}: no image files (.bmp, .jpeg, .jpg, .png, .tif, ")
    assert not (tmp_path / "out").exists()


def test_anomalib_predict_names_an_empty_folder(tmp_path: Path) -> None:
    """``anomalib predict --data_path EMPTY``, empty or holding no image file: anomalib's ``PredictDataset``
    refuses it, naming the folder."""
    empty = tmp_path / "in"
    empty.mkdir()
    for _ in range(2):
        with pytest.raises(ValueError, match=rf"^Found 0 images in {empty}$"):
            anomalib_predict(empty, tmp_path / "out")
        (empty / "Thumbs.db").write_bytes(b"not an image")
        (empty / "notes.txt").write_text("no image here")


# ---------------------------------------------------------------- mixed-case suffixes
CASES = {".PNG": "PNG", ".TIF": "TIFF", ".JPG": "JPEG", ".jpeg": "JPEG"}  # suffix -> format written


def test_mixed_case_suffixes_are_predicted_on_both_paths(tmp_path: Path) -> None:
    """``.PNG``, ``.TIF``, ``.JPG`` and ``.jpeg`` copies of a real image next to its ``.png``: ``ssimae-predict`` and
    ``anomalib predict`` predict all five; the lossless copies score exactly as the ``.png``, the JPEG ones are read."""
    folder = tmp_path / "in"
    folder.mkdir()
    SOURCE.save(folder / "a.png")
    for suffix, kind in CASES.items():
        SOURCE.save(folder / f"copy{suffix}", format=kind)
    names = {"a.png", *(f"copy{suffix}" for suffix in CASES)}
    records, inputs = ssimae_predict(folder, tmp_path / "predict")
    maps = anomalib_predict(folder, tmp_path / "anomalib", in_channels=3)
    assert set(records) == set(inputs) == set(maps) == names
    for name in ("copy.PNG", "copy.TIF"):
        assert records[name]["anomaly_score"] == records["a.png"]["anomaly_score"]
        assert np.array_equal(inputs[name], inputs["a.png"])
        assert torch.equal(maps[name], maps["a.png"])  # the map the score is taken from
    for name in ("copy.JPG", "copy.jpeg"):  # lossy: close, not equal
        assert np.abs(inputs[name] - inputs["a.png"]).mean() < 0.02
        assert inputs[name].shape == inputs["a.png"].shape


def test_mixed_case_defective_images_pair_with_their_masks(tmp_path: Path) -> None:
    """MVTec AD ``test/pitting`` images as ``.JPG``, ``.TIF``, ``.PNG`` and ``.jpeg`` with ``<stem>_mask.png`` masks:
    each gets its own mask (anomalib's MVTecAD reads ``.png``/``.PNG`` only and drops the others silently)."""
    category = mvtec(tmp_path, pitting=PITTING[:4])
    for image, (suffix, kind) in zip(PITTING[:4], CASES.items(), strict=True):
        Image.open(image).save(category / "test" / "pitting" / f"{image.stem}{suffix}", format=kind)
        (category / "test" / "pitting" / image.name).unlink()
    masks = masks_by_image(setup_mvtec(tmp_path).test_data)
    assert sorted(masks) == sorted(f"{image.stem}{suffix}" for image, suffix in zip(PITTING[:4], CASES, strict=True))
    for image, suffix in zip(PITTING[:4], CASES, strict=True):
        assert np.array_equal(masks[f"{image.stem}{suffix}"], clean_mask(image))
