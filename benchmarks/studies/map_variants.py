"""Is it the map or the score? One checkpoint's reconstructions, scored through residuals that ignore fine texture
and image scores measured against each image's own baseline.

For a dataset where every image score of ``evaluate.py`` stays near chance (magnetic_tile), this asks whether another
residual of the same reconstructions separates defects better: SSIM, squared and absolute error, the "dark" residual
``max(reconstruction - input, 0)`` (holes and cracks are darker than the surface), and each of them after a Gaussian
blur of σ 1, 2 or 4 px of input and reconstruction (the blur removes striations the network never reconstructs). Image
scores: the maximum of the σ-smoothed map (σ 2, 4, 16), the 0.999 quantile, and the σ 4 maximum minus the image's
median (a per-image baseline). Same loading as ``evaluate.py`` (raw maps, all test images). Pixel AUROC on every 7th
pixel. Rows go to ``benchmarks/results/map_variants.csv`` (machine, date, commit).

    python benchmarks/studies/map_variants.py CHECKPOINT --data-root DIR/<dataset> [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from anomalib.metrics.auroc import _AUROC as AUROC
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from anomalib_ssimae.components.ssim import ssim_map
from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator
from benchmarks.machine import checkpoint_stamp
from benchmarks.quality.convergence import append
from benchmarks.quality.evaluate import load, load_model, test_samples

REPO = Path(__file__).resolve().parents[2]

BLURS = (1, 2, 4)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    size = int(4 * sigma) | 1
    return TF.gaussian_blur(images, [size, size], [sigma, sigma])


def residuals(inputs: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
    """Residual maps ``(B, 1, H, W)`` of inputs and reconstruction ``(B, C, H, W)`` in [0, 1]."""
    maps = {}
    for sigma in (0, *BLURS):
        x, r = (inputs, reconstruction) if sigma == 0 else (blur(inputs, sigma), blur(reconstruction, sigma))
        suffix = f"_blur{sigma}" if sigma else ""
        maps["ssim" + suffix] = 1 - ssim_map(x, r).mean(1, keepdim=True)
        maps["l2" + suffix] = (x - r).pow(2).mean(1, keepdim=True)
        maps["abs" + suffix] = (x - r).abs().mean(1, keepdim=True)
        maps["dark" + suffix] = (r - x).clamp(min=0).mean(1, keepdim=True)
    return maps


def scores(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image scores ``(B,)`` of maps ``(B, 1, H, W)``."""
    flat = maps.flatten(1)
    result = {
        f"max_sigma{s}": AnomalyMapGenerator(score="max", score_sigma=float(s)).image_score(maps) for s in (2, 4, 16)
    }
    result["quantile0.999"] = torch.quantile(flat, 0.999, dim=1)
    result["max_sigma4_minus_median"] = result["max_sigma4"] - flat.median(1).values
    return result


def auroc(values: torch.Tensor, labels: torch.Tensor) -> float:
    metric = AUROC()
    metric.update(values, labels.long())
    return round(float(metric.compute()), 4)


@torch.no_grad()
def measure(model: torch.nn.Module, root: Path, size: tuple[int, int], batch: int = 16) -> list[dict]:
    """One row per residual: pixel AUROC and the image AUROC of each score."""
    samples = test_samples(root)
    maps: dict[str, list[torch.Tensor]] = {}
    masks, labels = [], torch.tensor([s[2] for s in samples])
    for start in range(0, len(samples), batch):
        pairs = [load(s, size) for s in samples[start : start + batch]]
        masks.append(torch.stack([p[1] for p in pairs]))
        tiled = model.reconstruct(torch.stack([p[0] for p in pairs]))
        for name, value in residuals(tiled.inputs.float(), tiled.reconstruction.float()).items():
            maps.setdefault(name, []).append(value)
    mask = torch.cat(masks).flatten()[::7]
    rows = []
    for name, parts in maps.items():
        value = torch.cat(parts)
        row = {"residual": name, "pixel_AUROC": auroc(value[:, 0].flatten()[::7], mask)}
        row |= {f"image_AUROC_{k}": auroc(v, labels) for k, v in scores(value).items()}
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset folder (MVTec layout)")
    parser.add_argument("--name", help="run name in the CSV (default: the checkpoint's folder)")
    args = parser.parse_args()
    model, size = load_model(args.checkpoint)
    model.eval()
    stamp = checkpoint_stamp(args.checkpoint, args.data_root, args.name)
    append(
        REPO / "benchmarks" / "results" / "map_variants.csv",
        [stamp | row for row in measure(model, args.data_root, size)],
    )


if __name__ == "__main__":
    main()
