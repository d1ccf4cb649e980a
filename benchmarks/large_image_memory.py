"""Peak memory and time of inference on one large image, by ``patch_batch_size`` (patches per network call).

Each setting runs in a fresh process (peak resident memory from ``getrusage``): an untrained SSIM-AE in eval mode
maps one ``SIZE x SIZE`` image (random content; memory and time do not depend on it), as ``anomalib test`` and
``predict`` do after the resize. Writes ``benchmarks/results/large_image_memory.md`` with machine and date.

    python benchmarks/large_image_memory.py [--size 2048] [--patch-batch-sizes 64 256 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "large_image_memory.md"


def child(size: int, patch_batch_size: int) -> None:
    """Run one setting and print a JSON line."""
    import torch

    from anomalib_ssimae import SsimAe

    model = SsimAe(image_size=size, patch_batch_size=patch_batch_size, visualizer=False).eval()
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        result = model.model(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    patches = model.model.tiler.num_patches(size, size)
    print(
        json.dumps(
            {
                "size": size,
                "patch_batch_size": patch_batch_size,
                "patches": patches,
                "peak_mib": round(peak / 1024),
                "before_mib": round(baseline / 1024),
                "seconds": round(seconds, 1),
                "score": float(result.pred_score[0]),
            }
        )
    )


def commit() -> str:
    """The short commit hash, with ``+changes`` when the working tree differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout
    return head.strip() + ("+changes" if dirty.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--patch-batch-sizes", type=int, nargs="+", default=[64, 256, 100_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.size, args.child)
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine import describe

    rows = []
    for value in args.patch_batch_sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--size", str(args.size), "--child", str(value)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        "# Inference memory on one large image",
        "",
        (
            f"`python benchmarks/large_image_memory.py --size {args.size}` · {date.today()} · commit {commit()} · "
            f"{describe()}"
        ),
        "",
        (
            "Peak resident memory of a fresh process (includes about the 'before' figure for torch, anomalib and the model)"
            " mapping one image with an untrained SSIM-AE; `patch_batch_size` patches go through the network per call."
        ),
        "",
        "| image | patches | patch_batch_size | peak MiB | before MiB | seconds | score |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['size']} x {r['size']} | {r['patches']} | {r['patch_batch_size']} | {r['peak_mib']} | "
        f"{r['before_mib']} | {r['seconds']} | {r['score']:.6f} |"
        for r in rows
    ]
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
