"""Is a defect at the image border still found? Pixel AUROC/AUPRO with every defect moved to a corner or the centre.

For each run folder given (from ``convergence.py``), its last checkpoint is scored twice on all test images of its
dataset: every defective image and its mask are rolled together so that the defect's bounding box touches the
top-left corner, or so that it is centred (``evaluate.place_defect``). Rows are appended to
``benchmarks/results/border_placement.csv``; ``report.py`` puts them into ``results/border.md``.

    python benchmarks/quality/border.py results/convergence/mvtec_ad_grid_mini/<run> [...] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import describe
from benchmarks.quality.convergence import append
from benchmarks.quality.evaluate import evaluate, load_model

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    args = parser.parse_args()
    for run in args.runs:
        checkpoint = max(run.glob("crops_*.pt"))
        dataset = run.parent.name
        model, size = load_model(checkpoint)
        row = {
            "date": date.today().isoformat(),
            "machine": describe(),
            "dataset": dataset,
            "run": run.name,
            "crops": int(checkpoint.stem.split("_")[1]),
        }
        for placement in ("centre", "corner"):
            result = evaluate(model, args.data_root / dataset, size, placement=placement)["model"]
            row |= {
                f"pixel_AUROC_{placement}": round(result["pixel_AUROC"], 4),
                f"pixel_AUPRO_{placement}": round(result["pixel_AUPRO"], 4),
            }
        append(REPO / "benchmarks" / "results" / "border_placement.csv", [row])
        print(row, flush=True)


if __name__ == "__main__":
    main()
