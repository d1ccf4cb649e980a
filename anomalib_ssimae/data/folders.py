"""anomalib's ``MVTecAD`` and ``Folder`` datamodules, listing the files so that each defective image gets its own mask.

Same arguments as anomalib's; select them in the data config::

    data:
      class_path: anomalib_ssimae.data.MVTecAD  # or anomalib_ssimae.data.Folder

anomalib 2.7 pairs the sorted defective images with the sorted masks by position and only checks that the image name
is part of the mask name: ``1.png, 2.png, 10.png`` fail with a false mismatch, masks in several ``mask_dir`` folders
that sort differently from the images go silently to other images, a missing mask ends in a NumPy/pandas error naming
no file. ``MVTecAD`` reads ``.png``/``.PNG`` only (``.jpg``, ``.bmp`` ... are dropped silently), and hidden files
(``.ipynb_checkpoints/``, macOS ``._*.png``) become samples that stop the run. These subclasses replace only the
listing (``_setup``) and the reading of each sample; splits, loaders and augmentations stay anomalib's. ``MVTecAD``
refuses a missing ``<root>/<category>``, naming it, before anything else when the category is not one of MVTec AD's
(anomalib's would download MVTec AD into ``root`` for any category). At setup, before training or testing:

- Images: any case of ``IMAGE_SUFFIXES`` (or Folder's ``extensions``), in sub-folders too. Hidden files and folders
  (a name starting with ``.``: AppleDouble ``._*``, ``.DS_Store``, ``.ipynb_checkpoints``), ``__MACOSX`` and
  non-image files (``Thumbs.db``) are skipped with a logged note. Each is read as ``ssimae-predict`` reads it
  (:func:`~anomalib_ssimae.data.images.open_rgb`: anomalib's RGB values, any mix of gray, palette, RGB and opaque
  RGBA files); a 16-bit gray, float or transparent image raises an error naming it when it is loaded.
- Masks are paired by name: ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` for the image ``<stem>.<ext>``; MVTecAD looks in
  ``ground_truth/<defect>/``; Folder in all of ``mask_dir``, preferring, among masks of the same name, the folder at
  the image's position in the ``abnormal_dir`` list (lists of equal length), then the same sub-folder.
- Each mask is read as training will (:mod:`anomalib_ssimae.data.masks`: {0, 1}, {0, 255}, class levels and
  anti-aliased edges) and must have its image's size.

Raises ``ValueError`` naming the files when a defective image has no mask or several, when one mask matches several
images, when a mask is unreadable or of another size, and when ``MVTecAD``'s ``train/`` holds folders besides
``good/``; ``FileNotFoundError`` naming the folder when it holds no image. Warns about masks that match no image,
images outside the class folders, and, after the splits, test sets on which image or pixel metrics cannot be computed
(all defect-free, all defective, or defective images without masks: no ``ground_truth/`` folder or ``mask_dir``).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from anomalib import TaskType
from anomalib.data import Folder as AnomalibFolder
from anomalib.data import MVTecAD as AnomalibMVTecAD
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datasets.base import AnomalibDataset
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.utils import LabelName
from anomalib.data.utils.path import validate_and_resolve_path, validate_path
from pandas import DataFrame
from torchvision.transforms.v2.functional import to_dtype, to_image
from torchvision.tv_tensors import Mask

from anomalib_ssimae.cli_errors import install as install_short_errors
from anomalib_ssimae.data.images import IMAGE_SUFFIXES, is_hidden, note_skipped, open_rgb
from anomalib_ssimae.data.masks import check_mask, read_binary_mask

install_short_errors()  # the CLI resolves the datamodule too: its file errors in two lines

logger = logging.getLogger(__name__)
MASK_SUFFIX = "_mask"
COLUMNS = ["image_path", "label", "label_index", "mask_path", "split"]


@dataclass(frozen=True)
class _File:
    path: Path
    group: str  # MVTecAD: the defect folder; Folder: the position of its folder in the list
    subdir: Path  # inside that folder


def list_images(folder: Path, suffixes: set[str], skipped: list[Path]) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); hidden and non-image files are appended to ``skipped``."""
    images = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        if is_hidden(path, folder) or path.suffix.lower() not in suffixes:
            skipped.append(path)
        else:
            images.append(path)
    return images


def _class_folders(folder: Path, skipped: list[Path]) -> list[Path]:
    """Visible sub-folders of ``folder`` (none if it is missing); warns about images lying directly in it."""
    if not folder.is_dir():
        return []
    entries = sorted(folder.iterdir())
    folders = [p for p in entries if p.is_dir() and not is_hidden(p, folder)]
    loose = [p for p in entries if p.is_file() and not is_hidden(p, folder) and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        msg = (
            f"{len(loose)} images directly in {folder} are not used (e.g. {loose[0].name}): put them in a class folder"
        )
        warnings.warn(msg, stacklevel=3)
    skipped += [p for p in entries if p not in folders and p not in loose]
    return folders


def _mask_keys(path: Path) -> set[str]:
    stem = path.stem
    return {stem, stem.removesuffix(MASK_SUFFIX)}


def pair_masks(
    images: list[_File], masks: list[_File], expected: Callable[[_File], str], same_group: bool
) -> list[str]:
    """The mask of each defective image, by name (see the module docstring); read and size-checked.

    Raises:
        ValueError: listing every image without a mask or with several, every mask matching several images, and
            unreadable or wrongly sized masks.
    """
    by_key: dict[str, list[_File]] = defaultdict(list)
    for mask in masks:
        for key in _mask_keys(mask.path):
            by_key[key].append(mask)
    problems, chosen = [], []
    for image in images:
        found = [m for m in by_key.get(image.path.stem, []) if m.group == image.group or not same_group]
        for attribute in ("group", "subdir"):
            same = [m for m in found if getattr(m, attribute) == getattr(image, attribute)]
            found = same if len(found) > 1 and same else found
        if not found:
            problems.append(f"no mask for the defective image {image.path}: expected {expected(image)}")
        elif len(found) > 1:
            problems.append(f"several masks for {image.path}: {', '.join(str(m.path) for m in found)}")
        chosen.append(found[0].path if len(found) == 1 else None)
    users: dict[Path, list[Path]] = defaultdict(list)
    for image, mask in zip(images, chosen, strict=True):
        if mask is not None:
            users[mask].append(image.path)
    for mask, owners in users.items():
        if len(owners) > 1:
            problems.append(f"the mask {mask} matches several images: {', '.join(map(str, owners))}; rename them")
    for image, mask in zip(images, chosen, strict=True):
        if mask is not None and len(users[mask]) == 1:
            try:
                check_mask(mask, image.path)
            except ValueError as error:
                problems.append(str(error))
    if problems:
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        msg = f"{len(problems)} mask problem(s):\n" + "\n".join(problems[:20]) + more
        raise ValueError(msg)
    if unused := [m.path for m in masks if m.path not in users]:
        warnings.warn(f"{len(unused)} masks match no defective image, e.g. {unused[0]}", stacklevel=3)
    return [str(mask) for mask in chosen]


def _samples(rows: list[tuple[str, str, int, str, str]]) -> DataFrame:
    samples = DataFrame(rows, columns=COLUMNS).astype({"label_index": int})
    samples.attrs["task"] = "segmentation" if (samples.mask_path != "").any() else "classification"
    return samples.sort_values(by="image_path", ignore_index=True)


def make_mvtec_samples(root: str | Path) -> DataFrame:
    """Samples of ``root`` = ``<root>/<category>`` in the MVTec AD layout (``train/good``, ``test/<class>``,
    ``ground_truth/<defect>``): anomalib's columns; segmentation if ``ground_truth/`` exists.

    Raises:
        FileNotFoundError: if ``train/good`` is missing or holds no image.
        ValueError: for ``train/`` folders besides ``good/`` and mask problems (:func:`pair_masks`).
    """
    root = validate_path(root)
    skipped: list[Path] = []
    for folder in _class_folders(root / "train", skipped):
        if folder.name != "good":
            msg = f"{folder}: the MVTec AD layout trains on train/good/ only; move these images to test/{folder.name}/"
            raise ValueError(msg)
    train = list_images(root / "train" / "good", IMAGE_SUFFIXES, skipped) if (root / "train" / "good").is_dir() else []
    if not train:
        msg = f"no training images in {root / 'train' / 'good'} ({', '.join(sorted(IMAGE_SUFFIXES))}, any case)"
        raise FileNotFoundError(msg)
    rows = [(str(p), "good", LabelName.NORMAL, "", "train") for p in train]
    defective = []
    for folder in _class_folders(root / "test", skipped):
        for path in list_images(folder, IMAGE_SUFFIXES, skipped):
            if folder.name == "good":
                rows.append((str(path), "good", LabelName.NORMAL, "", "test"))
            else:
                defective.append(_File(path, folder.name, path.parent.relative_to(folder)))
    truth = root / "ground_truth"
    mask_paths = [""] * len(defective)
    if defective and truth.is_dir():
        masks = [
            _File(path, folder.name, path.parent.relative_to(folder))
            for folder in _class_folders(truth, skipped)
            for path in list_images(folder, IMAGE_SUFFIXES, skipped)
        ]
        mask_paths = pair_masks(
            defective,
            masks,
            lambda image: f"{truth / image.group / image.subdir / image.path.stem}{MASK_SUFFIX}.png (or .bmp ...)",
            same_group=True,
        )
    rows += [(str(f.path), f.group, LabelName.ABNORMAL, m, "test") for f, m in zip(defective, mask_paths, strict=True)]
    note_skipped(logger, skipped, root, "hidden or non-image")
    return _samples(rows)


def make_folder_samples(
    normal_dir: str | Path | Sequence[str | Path],
    root: str | Path | None = None,
    abnormal_dir: str | Path | Sequence[str | Path] | None = None,
    normal_test_dir: str | Path | Sequence[str | Path] | None = None,
    mask_dir: str | Path | Sequence[str | Path] | None = None,
    extensions: Sequence[str] | None = None,
) -> DataFrame:
    """Samples of anomalib's ``Folder`` arguments (folders relative to ``root``; each may be a list).

    Raises:
        FileNotFoundError: naming a folder that holds no image.
        ValueError: for mask problems (:func:`pair_masks`) and extensions without a leading dot.
    """

    def folders(value: str | Path | Sequence[str | Path] | None) -> list[Path]:
        values = [value] if isinstance(value, str | Path) else list(value or [])
        return [validate_and_resolve_path(v, root) for v in values]

    suffixes = {e.lower() for e in extensions} if extensions else IMAGE_SUFFIXES
    if not all(e.startswith(".") for e in suffixes):
        msg = f"extensions {sorted(suffixes)} must start with a dot"
        raise ValueError(msg)
    skipped: list[Path] = []

    def images(folder: Path, kind: str) -> list[Path]:
        found = list_images(folder, suffixes, skipped)
        if not found:
            msg = f"no {kind} images in {folder} ({', '.join(sorted(suffixes))}, any case)"
            raise FileNotFoundError(msg)
        return found

    normal, normal_test = folders(normal_dir), folders(normal_test_dir)
    abnormal, mask_folders = folders(abnormal_dir), folders(mask_dir)
    if not normal:
        msg = "A folder location must be provided in normal_dir."
        raise ValueError(msg)
    rows = [(str(p), "normal", LabelName.NORMAL, "", "train") for f in normal for p in images(f, "normal")]
    rows += [
        (str(p), "normal_test", LabelName.NORMAL, "", "test") for f in normal_test for p in images(f, "normal_test")
    ]
    by_position = len(abnormal) == len(mask_folders)
    defective = [
        _File(p, str(i) if by_position else "", p.parent.relative_to(f))
        for i, f in enumerate(abnormal)
        for p in images(f, "abnormal")
    ]
    mask_paths = [""] * len(defective)
    if defective and mask_folders:
        masks = [
            _File(p, str(i) if by_position else "", p.parent.relative_to(f))
            for i, f in enumerate(mask_folders)
            for p in list_images(f, IMAGE_SUFFIXES, skipped)
        ]
        where = ", ".join(map(str, mask_folders))
        mask_paths = pair_masks(
            defective,
            masks,
            lambda image: f"{image.path.stem}{MASK_SUFFIX}.<ext> or {image.path.stem}.<ext> in mask_dir ({where})",
            same_group=False,
        )
    rows += [
        (str(f.path), "abnormal", LabelName.ABNORMAL, m, "test") for f, m in zip(defective, mask_paths, strict=True)
    ]
    note_skipped(logger, skipped, root or normal[0], "hidden or non-image")
    return _samples(rows)


class NamedMaskDataset(AnomalibDataset):
    """An anomalib image dataset over given samples whose masks are read by :func:`read_binary_mask`."""

    def __init__(self, name: str, samples: DataFrame, category: str | None = None) -> None:
        super().__init__()
        self._name = name
        self.category = category
        self.samples = samples

    @property
    def name(self) -> str:
        return self._name

    def __getitem__(self, index: int) -> ImageItem:
        """anomalib's item (image, mask, label, paths, after the augmentations), with the mask read as binary and
        the image read by :func:`~anomalib_ssimae.data.images.open_rgb` (anomalib's values; a 16-bit gray, float or
        transparent image raises an error naming it, whichever model trains)."""
        sample = self.samples.iloc[index]
        image = to_dtype(to_image(open_rgb(sample.image_path)), torch.float32, scale=True)  # as anomalib's read_image
        gt_mask = None
        if self.task == TaskType.SEGMENTATION:
            abnormal = sample.label_index == LabelName.ABNORMAL
            binary = read_binary_mask(sample.mask_path) if abnormal else np.zeros(image.shape[-2:], dtype=bool)
            gt_mask = Mask(torch.from_numpy(binary).to(torch.uint8))
        if self.augmentations and gt_mask is None:
            image = self.augmentations(image)
        elif self.augmentations:
            image, gt_mask = self.augmentations(image, gt_mask)
        return ImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=torch.tensor(sample.label_index),
            image_path=sample.image_path,
            mask_path=sample.mask_path,
        )


def warn_uncomputable_metrics(dataset: AnomalibDataset) -> None:
    """Warn which test metrics ``dataset`` cannot give (anomalib 2.7 prints them as 0.0 or leaves them out)."""
    labels = set(dataset.samples.label_index)
    where = f"the {len(dataset)} test images of {dataset.name}"
    if labels == {LabelName.NORMAL}:
        warnings.warn(
            f"{where} are all defect-free: image and pixel metrics (AUROC, F1, AUPRO) cannot be "
            "computed; anomalib prints them as 0.0. Add defective test images",
            stacklevel=3,
        )
    elif labels == {LabelName.ABNORMAL}:
        warnings.warn(
            f"{where} are all defective: image AUROC and F1 cannot be computed (0.0 is no result)", stacklevel=3
        )
    if LabelName.ABNORMAL in labels and dataset.task == TaskType.CLASSIFICATION:
        warnings.warn(
            f"{where} have no masks (no ground_truth/ folder or mask_dir): pixel AUROC, AUPRO and pixel F1 "
            "cannot be computed; image metrics can",
            stacklevel=3,
        )


class _NamedMasks:
    """``setup`` of the datamodules below: anomalib's, then :func:`warn_uncomputable_metrics` on the test set."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)  # type: ignore[misc]
        if getattr(self, "test_data", None) is not None and len(self.test_data):
            warn_uncomputable_metrics(self.test_data)

    def _datasets(self, name: str, samples: DataFrame, category: str | None = None) -> None:
        self.train_data = NamedMaskDataset(name, samples[samples.split == "train"], category)
        self.test_data = NamedMaskDataset(name, samples[samples.split == "test"], category)


class MVTecAD(_NamedMasks, AnomalibMVTecAD):
    """anomalib's ``MVTecAD``, same arguments; images of any suffix case, masks paired by name (module docstring)."""

    def prepare_data(self) -> None:
        """anomalib's: download MVTec AD when ``<root>/<category>`` is missing, but only for one of its 15
        categories. For any other category the archive cannot hold it: anomalib 2.7 would still download MVTec AD
        (4.9 GB) into ``root`` and then fail on the missing folder.

        Raises:
            FileNotFoundError: naming ``<root>/<category>`` when it is not a folder and ``category`` is not an
                MVTec AD category.
        """
        folder = Path(self.root) / self.category
        if not folder.is_dir() and self.category not in MVTEC_CATEGORIES:
            msg = (
                f"{folder}: no such folder (data.init_args.root {self.root}, category {self.category}); anomalib "
                "downloads only the MVTec AD categories. Check data.init_args.root and data.init_args.category"
            )
            raise FileNotFoundError(msg)
        super().prepare_data()

    def _setup(self, _stage: str | None = None) -> None:
        self._datasets("MVTecAD", make_mvtec_samples(Path(self.root) / self.category), self.category)


class Folder(_NamedMasks, AnomalibFolder):
    """anomalib's ``Folder``, same arguments; masks paired by name, hidden files skipped (module docstring)."""

    def _setup(self, _stage: str | None = None) -> None:
        samples = make_folder_samples(
            self.normal_dir, self.root, self.abnormal_dir, self.normal_test_dir, self.mask_dir, self.extensions
        )
        self._datasets(self.name, samples)
