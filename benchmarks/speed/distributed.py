"""One process against Lightning's DDP with two processes (gloo, CPU), the quickstart through anomalib's CLI.

Each run is ``anomalib train`` on the embedded data (``configs/model/ssim_ae.yaml`` + ``configs/data/quickstart.yaml``)
for the same number of crops (``crops_per_epoch`` counts the crops of all processes): one process with all threads,
then ``--trainer.strategy ddp --trainer.devices 2`` (each process one thread on 2 cores). Records wall time of the
whole command (start-up, training, validation, test), the optimiser steps and the test metrics, per seed. Appends a
table to ``benchmarks/results/distributed.md``.

    python benchmarks/speed/distributed.py [--crops 20000] [--seeds 42 43]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import append_markdown, commit, describe

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["--config", str(REPO / "configs/model/ssim_ae.yaml"), "--config", str(REPO / "configs/data/quickstart.yaml")]
CHECKPOINT = "results/SsimAe/MVTecAD/bsdata_pitting_mini/v0/weights/lightning/model.ckpt"
SHOWN = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")


def train(folder: Path, crops: int, seed: int, ddp: bool) -> dict:
    """Run one training in ``folder``; its wall time, optimiser steps and test metrics."""
    epochs = 2
    args = [*CONFIGS, "--data.root", str(REPO / "datasets"), "--trainer.max_epochs", str(epochs)]
    args += ["--model.crops_per_epoch", str(crops // epochs), "--model.seed", str(seed), "--trainer.max_time", "null"]
    if ddp:
        args += ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    if ddp:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
    folder.mkdir(parents=True)
    start = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "anomalib"), "train", *args],
        cwd=folder, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        msg = f"anomalib train failed ({'ddp' if ddp else 'one process'}, seed {seed}):\n{result.stderr[-3000:]}"
        raise RuntimeError(msg)
    table = result.stdout.rsplit("Test metric", 1)[-1]
    values = {k: float(v) for k, v in re.findall(r"│\s*(\w+)\s*│\s*([-0-9.eE+]+)\s*│", table)}
    steps = torch.load(folder / CHECKPOINT, weights_only=True)["global_step"]
    return {"seconds": seconds, "steps": steps, **{k: values[k] for k in SHOWN}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "distributed.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for ddp in (False, True):
                name = "DDP, 2 processes" if ddp else "1 process"
                row = train(Path(work) / f"{seed}_{int(ddp)}", args.crops, seed, ddp)
                rows.append((name, seed, row))
                print(name, seed, row, flush=True)
    lines = [
        f"\n## {datetime.date.today()} · {args.crops:,} crops · {describe()} · commit {commit()}\n",
        "| run | seed | optimiser steps | wall s | " + " | ".join(SHOWN) + " |",
        "|---|---|---|---|" + "---|" * len(SHOWN),
        *(
            f"| {name} | {seed} | {r['steps']} | {r['seconds']:.0f} | "
            + " | ".join(f"{r[k]:.3f}" for k in SHOWN)
            + " |"
            for name, seed, r in rows
        ),
        (
            "\nWall time of the whole `anomalib train` (start-up, training, validation, test), the anomalib test "
            "half. `python benchmarks/speed/distributed.py`.\n"
        ),
    ]
    append_markdown(args.out, "Training with Lightning's DDP on CPU (gloo)", lines)


if __name__ == "__main__":
    main()
