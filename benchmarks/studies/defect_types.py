"""Which defects does a checkpoint see? Per defect type: image AUROC against the defect-free test images, and the mean
residual inside the defect masks against outside them; plus a picture of input, reconstruction, map and mask.

For a dataset whose image AUROC is low overall, this says whether every kind of defect is missed or only some (large
smooth regions the network reconstructs, tiny ones drowned by texture it cannot reconstruct). Same loading and raw
maps as ``evaluate.py`` (the model's own map and score; position normalisation is not fitted here, so maps are raw).
Rows are appended to ``benchmarks/results/defect_types.csv`` (machine, date, commit); the picture goes to
``benchmarks/results/defect_types_<dataset>_<run>.png`` (two images per type, picked with a fixed seed).

    python benchmarks/studies/defect_types.py CHECKPOINT --data-root DIR/<dataset> [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from anomalib.metrics.auroc import _AUROC as AUROC
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import checkpoint_stamp
from benchmarks.quality.convergence import append
from benchmarks.quality.evaluate import load, load_model, test_samples

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
SHOWN = 2  # images per defect type in the picture


@torch.no_grad()
def measure(model: torch.nn.Module, root: Path, size: tuple[int, int]) -> tuple[dict, list[np.ndarray]]:
    """Per type: scores, inside/outside mean residual; and picture rows ``[input | reconstruction | map | mask]``."""
    by_type: dict[str, dict] = {}
    rows = []
    rng = np.random.default_rng(0)
    samples = test_samples(root)
    types = sorted({s[0].parent.name for s in samples})
    shown = {
        t: set(rng.permutation([i for i, s in enumerate(samples) if s[0].parent.name == t])[:SHOWN]) for t in types
    }
    for index, sample in enumerate(samples):
        image, mask = load(sample, size)
        tiled = model.reconstruct(image[None])
        prediction = model.anomaly_prediction(tiled.inputs, tiled.reconstruction)
        amap = prediction.anomaly_map[0, 0]
        entry = by_type.setdefault(sample[0].parent.name, {"scores": [], "inside": [], "outside": []})
        entry["scores"].append(float(prediction.pred_score[0]))
        if mask.any():
            entry["inside"].append(float(amap[mask].mean()))
        entry["outside"].append(float(amap[~mask].mean()))
        if index in shown[sample[0].parent.name]:
            gray = [tiled.inputs[0].mean(0), tiled.reconstruction[0].mean(0), amap.clamp(0, 1), mask.float()]
            rows.append(np.hstack([g.numpy() for g in gray]))
    return by_type, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset folder (MVTec layout)")
    parser.add_argument("--name", help="run name in the CSV and picture (default: the checkpoint's folder)")
    args = parser.parse_args()
    model, size = load_model(args.checkpoint)
    model.eval()
    by_type, rows = measure(model, args.data_root, size)
    good = torch.tensor(by_type["good"]["scores"])
    name = args.name or args.checkpoint.parent.name
    stamp = checkpoint_stamp(args.checkpoint, args.data_root, name)
    table = []
    for kind, entry in sorted(by_type.items()):
        row = stamp | {"defect_type": kind, "images": len(entry["scores"])}
        row |= {"image_AUROC_vs_good": "", "residual_inside": ""}  # the same columns for "good"
        if kind != "good":
            metric = AUROC()
            defective = torch.tensor(entry["scores"])
            metric.update(
                torch.cat([good, defective]), torch.cat([torch.zeros(len(good)), torch.ones(len(defective))]).long()
            )
            row["image_AUROC_vs_good"] = round(float(metric.compute()), 4)
            row["residual_inside"] = round(float(np.mean(entry["inside"])), 4)
        row["residual_outside"] = round(float(np.mean(entry["outside"])), 4)
        table.append(row)
        print({k: v for k, v in row.items() if k not in stamp}, flush=True)
    append(RESULTS / "defect_types.csv", table)
    picture = (np.vstack(rows) * 255).clip(0, 255).astype(np.uint8)
    Image.fromarray(picture).reduce(2).save(RESULTS / f"defect_types_{args.data_root.name}_{name}.png")


if __name__ == "__main__":
    main()
