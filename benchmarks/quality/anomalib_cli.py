"""Detection quality of SSIM-AE on the shared datasets within a CPU time budget, through anomalib's CLI.

For each dataset: `anomalib train --config configs/model/<model>.yaml --config configs/data/<dataset>.yaml
--trainer.max_epochs <epochs>` (fit, then test on the held-out half of the test images); the test metrics, fit time
and the command go into a Markdown table (stdout and benchmarks/results/anomalib_cli.md, appended). A fixed number of
epochs (not a time limit) keeps the metrics reproducible on a busy machine; the CPU budget is chosen through the
epochs and the fit time is reported.

    python benchmarks/quality/anomalib_cli.py mvtec_ad_grid_mini magnetic_tile --epochs 5 [--model ssim_ae] \
        [--data-root DIR]

Equal CPU time per run instead (the four variants, ``benchmarks/quality/README.md``): ``--max-time 7
--crops-per-epoch 2560`` stops each fit after 7 minutes (Lightning's ``max_time``; the last validation still runs, so
thresholds exist) with short epochs so that the stop comes close to the budget. Pin it for stable timings, e.g.
``OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/quality/anomalib_cli.py ...``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import describe

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--epochs", type=int, default=5, help="trainer.max_epochs (10,000 crops each by default)")
    parser.add_argument("--model", default="ssim_ae", help="model config: configs/model/<model>.yaml")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--max-time", type=float, help="fit budget in minutes (trainer.max_time)")
    parser.add_argument("--crops-per-epoch", type=int, help="model crops_per_epoch (default: the config's)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI overrides")
    args = parser.parse_args()
    budget = f"{args.epochs} epochs"
    if args.max_time:
        budget += f" or {args.max_time:g} min fit"
        minutes = int(args.max_time)
        args.extra += ["--trainer.max_time", f"00:00:{minutes:02d}:{round((args.max_time - minutes) * 60):02d}"]
    if args.crops_per_epoch:
        budget += f", {args.crops_per_epoch} crops per epoch"
        args.extra += ["--model.init_args.crops_per_epoch", str(args.crops_per_epoch)]
    threads = os.environ.get("OMP_NUM_THREADS")
    header = f"\n## {date.today()} · {describe()}{f' · {threads} thread(s)' if threads else ''} · model {args.model} · {budget}\n\n"
    header += (
        "| dataset | image AUROC | pixel AUROC | pixel AUPRO | image F1Max | pixel F1 | rec. SSIM | rec. MSE "
        "| epochs | fit s | command |\n"
    )
    header += "|---|---|---|---|---|---|---|---|---|---|---|\n"
    out = REPO / "benchmarks" / "results" / "anomalib_cli.md"
    print(header, end="", flush=True)
    with out.open("a") as f:
        f.write(header)
    anomalib = str(Path(sys.executable).parent / "anomalib")
    for name in args.datasets:
        root = REPO / "results" / "benchmark_quality" / args.model / name / time.strftime("%Y%m%d-%H%M%S")
        data_root = os.path.relpath(args.data_root, REPO)
        command = [
            anomalib,
            "train",
            "--config",
            f"configs/model/{args.model}.yaml",
            "--config",
            f"configs/data/{name}.yaml",
            "--data.root",
            data_root,
            "--trainer.max_epochs",
            str(args.epochs),
            *args.extra,
            "--default_root_dir",
            str(root),
        ]
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        (root / "stdout.log").parent.mkdir(parents=True, exist_ok=True)
        (root / "stdout.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            row = f"| {name} | failed (rc {result.returncode}), see {root / 'stdout.log'} |||||||||\n"
        else:
            table = result.stdout.rsplit("Test metric", 1)[-1]
            m = {k: float(v) for k, v in re.findall(r"│\s*(\w+)\s*│\s*([-0-9.eE+]+)\s*│", table)}
            fit = re.search(r"Training took ([0-9.]+) seconds", result.stdout + result.stderr)
            epochs = max((int(e) for e in re.findall(r"Epoch (\d+)/", result.stdout + result.stderr)), default=-1) + 1
            shown = " ".join(c if c != anomalib else "anomalib" for c in command[:-2])
            row = (
                f"| {name} | {m.get('image_AUROC', float('nan')):.3f} | {m.get('pixel_AUROC', float('nan')):.3f} "
                f"| {m.get('pixel_AUPRO', float('nan')):.3f} | {m.get('image_F1Max', float('nan')):.3f} "
                f"| {m.get('pixel_F1Score', float('nan')):.3f} | {m.get('reconstruction_SSIM', float('nan')):.3f} "
                f"| {m.get('reconstruction_MSE', float('nan')):.1f} | {epochs} | {float(fit.group(1)) if fit else float('nan'):.0f} "
                f"| `{shown}` |\n"
            )
        print(row, end="", flush=True)
        with out.open("a") as f:
            f.write(row)


if __name__ == "__main__":
    main()
