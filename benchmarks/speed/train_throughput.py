"""Training throughput of SSIM-AE: bare torch loops of the same network vs our anomalib training, same run.

Patches of 128 x 128, grayscale, batch 128, Adam. Bare loops feed one fixed random batch (no data loading, no
augmentation); ours runs `Engine.fit` on the embedded bsdata_pitting_mini data (augmented crops drawn on the fly,
Lightning loop, logging), validation off. Prints a Markdown table and the peak resident memory (copied into
``benchmarks/results/train_throughput.md``).

    python benchmarks/speed/train_throughput.py [--steps 6] [--precisions 32-true bf16-mixed]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss
from anomalib_ssimae.models.ssim_ae.network import SsimAeNetwork
from benchmarks.machine import describe

REPO = Path(__file__).resolve().parents[2]


def bare_loop(loss_name: str, channels_last: bool, bf16: bool, steps: int) -> float:
    """Patches per second of a plain forward/backward/Adam loop (median step time after one warm-up step)."""
    torch.manual_seed(0)
    network = SsimAeNetwork(1, 100)
    patches = torch.rand(128, 1, 128, 128)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        patches = patches.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-4)
    loss_fn = ReconstructionLoss(loss_name)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            reconstruction = network(patches)
        loss = loss_fn(patches, reconstruction)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 128 / sorted(times[1:])[len(times[1:]) // 2]


def ours(precision: str, steps: int) -> float:
    """Patches per second of `Engine.fit` (one epoch of `steps` optimiser steps, after a warm-up epoch)."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    from anomalib_ssimae import SsimAe

    rates = []
    for crops in (128, 128 * steps):  # the first epoch is a warm-up (allocations, start-up)
        torch.manual_seed(0)
        model = SsimAe(image_size=(208, 512), crops_per_epoch=crops, batch_size=128, visualizer=False)
        data = MVTecAD(
            root=REPO / "datasets", category="bsdata_pitting_mini", num_workers=0, seed=0, train_batch_size=40
        )
        engine = Engine(
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            precision=precision,
            logger=False,
            limit_val_batches=0,
            enable_progress_bar=False,
            default_root_dir=REPO / "results" / "benchmark_throughput",
        )
        start = time.perf_counter()
        engine.fit(model, datamodule=data)
        rates.append(crops / (time.perf_counter() - start))
    return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    print(f"# {date.today()} · {describe()} · {torch.get_num_threads()} threads\n")
    print("| loop | precision | layout | loss | patches/s |\n|---|---|---|---|---|")
    rows = {}
    for bf16 in (False, True):
        if ("bf16-mixed" if bf16 else "32-true") not in args.precisions:
            continue
        for channels_last in (False, True):
            for loss in ("l2", "ssim"):
                steps = args.steps if not bf16 else max(2, args.steps // 3)
                rate = bare_loop(loss, channels_last, bf16, steps)
                rows[(bf16, channels_last, loss)] = rate
                print(
                    f"| bare | {'bf16 autocast' if bf16 else 'fp32'} | {'channels_last' if channels_last else 'default'} "
                    f"| {loss} | {rate:.0f} |",
                    flush=True,
                )
    for precision in args.precisions:
        rate = ours(precision, args.steps if precision == "32-true" else max(2, args.steps // 3))
        bare = rows.get((precision == "bf16-mixed", True, "ssim"))
        ratio = f" ({rate / bare:.2f}x the bare SSIM loop)" if bare else ""
        print(f"| anomalib-ssimae Engine.fit | {precision} | channels_last | ssim | {rate:.0f}{ratio} |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nPeak resident memory of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
