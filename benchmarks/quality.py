"""Detection quality of SSIM-AE on the shared datasets within a CPU time budget, through anomalib's CLI.

For each dataset: `anomalib train --config configs/ssim_ae/<dataset>.yaml --trainer.max_time <budget>` (fit, then
test on the held-out half of the test images), then the test metrics, train time and the command go into a
Markdown table (stdout and benchmarks/results_quality.md, appended).

    python benchmarks/quality.py mvtec_ad_grid_mini magnetic_tile --budget 00:00:15:00 [--data-root ../shared/datasets]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--budget", default="00:00:15:00", help="Lightning max_time DD:HH:MM:SS for fitting")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI overrides")
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "?")
    header = f"\n## {date.today()} · {model_name} · {os.cpu_count()} cores · fit budget {args.budget}\n\n"
    header += "| dataset | image AUROC | pixel AUROC | pixel AUPRO | image F1Max | pixel F1 | epochs | fit s | command |\n"
    header += "|---|---|---|---|---|---|---|---|---|\n"
    out = REPO / "benchmarks" / "results_quality.md"
    print(header, end="", flush=True)
    with out.open("a") as f:
        f.write(header)
    anomalib = str(Path(sys.executable).parent / "anomalib")
    for name in args.datasets:
        root = REPO / "results" / "benchmark_quality" / name / time.strftime("%Y%m%d-%H%M%S")
        command = [anomalib, "train", "--config", f"configs/ssim_ae/{name}.yaml", "--data.root", args.data_root,
                   "--trainer.max_time", args.budget, "--default_root_dir", str(root), *args.extra]
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        (root / "stdout.log").parent.mkdir(parents=True, exist_ok=True)
        (root / "stdout.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            row = f"| {name} | failed (rc {result.returncode}), see {root / 'stdout.log'} |||||||\n"
        else:
            table = result.stdout.rsplit("Test metric", 1)[-1]
            m = {k: float(v) for k, v in re.findall(r"│\s*(\w+)\s*│\s*([-0-9.eE+]+)\s*│", table)}
            fit = re.search(r"Training took ([0-9.]+) seconds", result.stdout + result.stderr)
            epochs = max((int(e) for e in re.findall(r"Epoch (\d+)/", result.stdout + result.stderr)), default=-1) + 1
            shown = " ".join(c if c != anomalib else "anomalib" for c in command[:8])
            row = (f"| {name} | {m.get('image_AUROC', float('nan')):.3f} | {m.get('pixel_AUROC', float('nan')):.3f} "
                   f"| {m.get('pixel_AUPRO', float('nan')):.3f} | {m.get('image_F1Max', float('nan')):.3f} "
                   f"| {m.get('pixel_F1Score', float('nan')):.3f} | {epochs} | {float(fit.group(1)) if fit else float('nan'):.0f} "
                   f"| `{shown} --trainer.max_time {args.budget}` |\n")
        print(row, end="", flush=True)
        with out.open("a") as f:
            f.write(row)


if __name__ == "__main__":
    main()
