"""Position normalisation of the anomaly map, measured on trained checkpoints: same networks, map with and without.

For each checkpoint (written by ``convergence.py`` or ``anomalib train``), the residual maps of up to 64
defect-free training images (evenly spaced, as the model does) fit
:class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.PositionNormalization` at several smoothing sigmas; every test
image is then scored with the raw and the normalised maps: pixel AUROC, image AUROC (the package's default score, the maximum of the sigma-16 smoothed map, for every
checkpoint) and
the border-band ratio of the defect-free test images (mean within 16 px of the border / interior mean). One CSV row
per checkpoint and variant goes to ``benchmarks/results/position_normalization.csv`` (machine, date, commit), and
``report.py``-style Markdown to ``position_normalization.md``.

    python benchmarks/quality/position_normalization.py DATASET CHECKPOINT [DATASET CHECKPOINT ...] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date
from pathlib import Path

import torch
from anomalib.metrics.auroc import _AUROC as AUROC

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator, PositionNormalization
from benchmarks.machine import commit, describe
from benchmarks.quality.evaluate import BAND, distance_to_border, load, load_model, test_samples

REPO = Path(__file__).resolve().parents[2]
CSV = REPO / "benchmarks" / "results" / "position_normalization.csv"
SIGMAS = (0.5, 4.0, 16.0)  # 0.5 px is almost no smoothing
FIT_IMAGES = 64
SCORE = AnomalyMapGenerator()  # the package default (max of the sigma-16 map), whatever a checkpoint used


@torch.no_grad()
def residual_maps(model: torch.nn.Module, samples: list, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw residual maps ``(N, 1, H, W)`` of the model and the masks ``(N, H, W)`` of ``samples``."""
    maps, masks = [], []
    for start in range(0, len(samples), 8):
        pairs = [load(sample, size) for sample in samples[start : start + 8]]
        tiled = model.reconstruct(torch.stack([p[0] for p in pairs]))
        maps.append(model.anomaly_map_generator.position_free_map(tiled.inputs, tiled.reconstruction))
        masks.append(torch.stack([p[1] for p in pairs]))
    return torch.cat(maps), torch.cat(masks)


def measure(dataset: str, checkpoint: Path, root: Path) -> list[dict]:
    """Rows for the raw map and each sigma."""
    model, size = load_model(checkpoint)
    model.eval()
    train = sorted((root / "train" / "good").glob("*.png"))
    count = min(len(train), FIT_IMAGES)
    train = [(train[i * len(train) // count], None, 0) for i in range(count)]
    fit_maps, _ = residual_maps(model, train, size)
    samples = test_samples(root)
    maps, masks = residual_maps(model, samples, size)
    labels = torch.tensor([s[2] for s in samples])
    good = labels == 0
    band = distance_to_border(*size) < BAND
    rows = []
    for sigma in (None, *SIGMAS):
        weighted = maps
        if sigma is not None:
            normalization = PositionNormalization(size, sigma=sigma)
            normalization.fit(fit_maps)
            weighted = normalization(maps)
        pixel, image = AUROC(), AUROC()
        pixel.update(weighted[:, 0].flatten(), masks.flatten().int())
        image.update(SCORE.image_score(weighted), labels)
        normal = weighted[good, 0]
        rows.append(
            {
                "dataset": dataset,
                "checkpoint": str(checkpoint.relative_to(REPO) if checkpoint.is_relative_to(REPO) else checkpoint),
                "map": "raw" if sigma is None else f"position_sigma{sigma:g}",
                "pixel_AUROC": round(float(pixel.compute()), 4),
                "image_AUROC": round(float(image.compute()), 4),
                "border_ratio": round(float(normal[:, band].mean() / normal[:, ~band].mean()), 3),
                "fit_images": count,
                "test_images": len(samples),
            }
        )
        print(rows[-1], flush=True)
    return rows


def write_markdown(rows: list[dict]) -> None:
    """``position_normalization.md``: one table of all rows in the CSV."""
    lines = [
        "# Position normalisation of the anomaly map",
        "",
        (
            "Written by `python benchmarks/quality/position_normalization.py`. Same checkpoints, residual map raw and "
            "divided by the expected defect-free residual per position (fitted on up to 64 training images, smoothed "
            "by sigma px). border_ratio: mean of the defect-free test maps within 16 px of the border / interior "
            "(target <= 1.1). Image AUROC: the package's default score (max of the sigma-16 smoothed map) for every checkpoint."
        ),
        "",
    ]
    for machine in sorted({r["machine"] for r in rows}):
        lines.append(f"- machine: {machine}")
    lines += [
        (
            f"- dates: {', '.join(sorted({r['date'] for r in rows}))}; "
            f"commits: {', '.join(sorted({r['commit'] for r in rows}))}"
        ),
        "",
        "| dataset | checkpoint | map | pixel AUROC | image AUROC | border ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {Path(r['checkpoint']).parent.name}/{Path(r['checkpoint']).stem} | "
            f"{r['map']} | {r['pixel_AUROC']} | {r['image_AUROC']} | {r['border_ratio']} |"
        )
    CSV.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", help="DATASET CHECKPOINT pairs")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=REPO.parent / "shared" / "datasets",
        help="folder holding the datasets (MVTec layout); 'bsdata_pitting_mini' is read from datasets/",
    )
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give DATASET CHECKPOINT pairs")
    stamp = {"date": date.today().isoformat(), "commit": commit(), "machine": describe()}
    for dataset, checkpoint in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        root = REPO / "datasets" / dataset if (REPO / "datasets" / dataset).is_dir() else args.data_root / dataset
        if not root.is_dir():
            parser.error(f"{root}: no such dataset folder (MVTec layout); pass --data-root")
        rows = [stamp | row for row in measure(dataset, Path(checkpoint).resolve(), root)]
        new = not CSV.exists()
        with CSV.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
    with CSV.open() as handle:
        write_markdown(list(csv.DictReader(handle)))


if __name__ == "__main__":
    main()
