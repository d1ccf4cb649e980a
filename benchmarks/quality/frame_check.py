"""False alarms and detections of the frame check (:class:`~anomalib_ssimae.models.ssim_ae.frame_check.FrameCheck`).

For each dataset in MVTec AD layout: fit the check on the defect-free training images, as its data config sizes and
converts them (``image_size``, ``in_channels``), then report which images it calls out of distribution at several
margins: the defect-free test images (false alarms), the defective test images (not an error either way), and
frames built from the defect-free test images: blank (the training images' mean grey), black, white, inverted,
under- and over-exposed (x0.5, x1.5, clipped), contrast halved around the mean, and the defect-free test images of
another dataset (a wrong part). No network is involved: the check reads intensity histograms only.

    python benchmarks/quality/frame_check.py --data-root ../shared/datasets [--out benchmarks/results/frame_check.md]
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from anomalib_ssimae.models.ssim_ae.frame_check import FLOOR, FrameCheck
from anomalib_ssimae.models.ssim_ae.torch_model import standardize, to_model_channels
from benchmarks.machine import code_commit, describe

REPO = Path(__file__).resolve().parents[2]
DATASETS = ["bsdata_pitting", "deeppcb", "hazelnut_toy", "magnetic_tile", "mvtec3d_tire", "mvtec_ad_grid_mini"]
MARGINS = [1.5, 2.0, 3.0]
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def settings(dataset: str) -> dict:
    """``image_size`` (height, width), ``in_channels`` and ``intensity_normalization`` of the dataset's config."""
    args = yaml.safe_load((REPO / "configs" / "data" / f"{dataset}.yaml").read_text())["model"]["init_args"]
    size = args["image_size"]
    return {
        "image_size": (size, size) if isinstance(size, int) else tuple(size),
        "in_channels": args.get("in_channels", 1),
        "standardize": args.get("intensity_normalization", "none") == "standardize",
    }


def load(paths: list[Path], options: dict) -> torch.Tensor:
    """Images -> ``(N, C, H, W)`` as the network sees them (resized bilinear without antialiasing, as the model's
    pre-processor, converted to its channels)."""
    images = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        images.append(
            torch.nn.functional.interpolate(tensor, size=options["image_size"], mode="bilinear", antialias=False)
        )
    return torch.cat(images).clamp(0, 1)


def prepare(images: torch.Tensor, options: dict) -> torch.Tensor:
    inputs = to_model_channels(images, options["in_channels"])
    return standardize(inputs) if options["standardize"] else inputs


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: print only)")
    args = parser.parse_args()
    rows, rates = [], {m: {} for m in MARGINS}
    good_rgb = {}
    for dataset in args.datasets:
        good_rgb[dataset] = load(files(args.data_root / dataset / "test" / "good")[:20], settings(dataset) | {})
    for dataset in args.datasets:
        options = settings(dataset)
        root = args.data_root / dataset
        train = prepare(load(files(root / "train" / "good"), options), options)
        good_paths = files(root / "test" / "good")
        bad_paths = [p for p in files(root / "test") if p.parent.name != "good"]
        good = load(good_paths, options)
        bad = prepare(load(bad_paths, options), options)
        check = FrameCheck(options["in_channels"])
        check.fit(train[i : i + 64] for i in range(0, len(train), 64))
        base = float(check.limit) / check.margin  # the largest training distance
        mean = float(train.mean())
        other = next(d for d in args.datasets if d != dataset)
        wrong = torch.nn.functional.interpolate(good_rgb[other], size=options["image_size"], mode="bilinear")
        frames = {
            "defect-free test (false alarms)": prepare(good, options),
            "defective test": bad,
            "blank (mean grey)": torch.full_like(good[:1], mean)[:, : options["in_channels"]],
            "black": torch.zeros_like(good[:1])[:, : options["in_channels"]],
            "white": torch.ones_like(good[:1])[:, : options["in_channels"]],
            "inverted": prepare(1 - good, options),
            "under-exposed x0.5": prepare(good * 0.5, options),
            "over-exposed x1.5": prepare((good * 1.5).clamp(0, 1), options),
            "contrast x0.5": prepare((good - good.mean()) * 0.5 + good.mean(), options),
            f"wrong part ({other})": prepare(wrong, options),
        }
        for name, images in frames.items():
            distance = torch.cat([check.distance(images[i : i + 32]) for i in range(0, len(images), 32)])
            flagged = {m: int((distance > max(base * m, FLOOR)).sum()) for m in MARGINS}
            rows.append((dataset, name, len(images), float(distance.min()), float(distance.median()), flagged))
            for m in MARGINS:
                rates[m].setdefault(name.split(" (")[0] if name.startswith("wrong") else name, []).append(
                    flagged[m] / len(images)
                )
        rows.append((dataset, "largest training nearest-neighbour distance", len(train), base, base, {}))
    lines = [
        "# Frame check: false alarms and detections",
        "",
        (
            f"`python benchmarks/quality/frame_check.py --data-root <datasets>` · {date.today()} · {describe()} · "
            f"commit {code_commit()}"
        ),
        "",
        (
            "Distance: L1 between an image's 32-bin intensity histogram and the nearest of the defect-free training "
            "images' (0 .. 2, averaged over channels). A frame is flagged when its distance exceeds margin x the largest "
            "such distance of a training image to its nearest other one, and at least "
            f"{FLOOR} (`FLOOR`); the model's default margin is 2. Columns: images flagged of all, per margin."
        ),
        "",
        "| dataset | frames | images | distance min | distance median | "
        + " | ".join(f"flagged at {m}" for m in MARGINS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(MARGINS),
    ]
    for dataset, name, count, low, median, flagged in rows:
        cells = (
            " | ".join(f"{flagged[m]}/{count}" if flagged else "" for m in MARGINS)
            if flagged
            else " | " * (len(MARGINS) - 1)
        )
        lines.append(f"| {dataset} | {name} | {count} | {low:.3f} | {median:.3f} | {cells} |")
    lines += [
        "",
        "Mean over the datasets of the fraction flagged:",
        "",
        "| frames | " + " | ".join(f"margin {m}" for m in MARGINS) + " |",
    ]
    lines.append("|---|" + "---|" * len(MARGINS))
    for name in rates[MARGINS[0]]:
        lines.append(f"| {name} | " + " | ".join(f"{np.mean(rates[m][name]):.3f}" for m in MARGINS) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
