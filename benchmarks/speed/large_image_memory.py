"""Peak memory and time of inference on one large image, by ``patch_batch_size`` (patches per network call).

Each setting runs in a fresh process (peak resident memory from ``getrusage``): an untrained SSIM-AE in eval mode
maps one image of ``--size`` (``HEIGHTxWIDTH`` in pixels, or one number for a square; random content: memory and
time do not depend on it), as ``anomalib test`` and ``predict`` do after the resize. ``--code`` measures the
``anomalib_ssimae`` of other checkouts too (e.g. a ``git worktree`` of an older commit), each named in the table by
its commit. Writes ``benchmarks/results/large_image_memory.md`` with machine and date.

    python benchmarks/speed/large_image_memory.py [--size 2048 1500x4000] [--patch-batch-sizes 16 64 256 100000]
        [--code . ../old-checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "benchmarks" / "results" / "large_image_memory.md"
INFERENCE_CODE = ("anomalib_ssimae/models/*.py", "anomalib_ssimae/components/*.py")  # what the child runs


def parse_size(text: str) -> tuple[int, int]:
    """``"2048"`` -> ``(2048, 2048)``; ``"1500x4000"`` -> ``(1500, 4000)``, height then width."""
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def child(size: tuple[int, int], patch_batch_size: int) -> None:
    """Run one setting with the ``anomalib_ssimae`` of the working directory and print a JSON line."""
    import torch

    from anomalib_ssimae import SsimAe

    model = SsimAe(image_size=list(size), patch_batch_size=patch_batch_size, visualizer=False).eval()
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        result = model.model(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "size": list(size),
                "patch_batch_size": patch_batch_size,
                "patches": model.model.tiler.num_patches(*size),
                "peak_mib": round(peak / 1024),
                "before_mib": round(baseline / 1024),
                "seconds": round(seconds, 1),
                "score": float(result.pred_score[0]),
            }
        )
    )


def git(code: Path, *args: str) -> str:
    """Output of ``git *args`` in ``code``."""
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=code, check=False).stdout.strip()


def subject(code: Path, *paths: str) -> str:
    """``hash ("subject")`` of the last commit in ``code`` (touching ``paths`` if given), the subject shortened."""
    commit, _, title = git(code, "log", "-1", "--format=%h %s", "--", *paths).partition(" ")
    title = title if len(title) <= 90 else title[:89] + "…"
    return f'{commit} ("{title}")'


def describe_code(code: Path) -> str:
    """The commit of ``code``, whether its ``anomalib_ssimae/`` (the package measured) differs from it, and the last
    commit that changed the inference code."""
    changed = git(code, "diff", "--name-only", "HEAD", "--", "anomalib_ssimae").split()
    changed += git(code, "ls-files", "--others", "--exclude-standard", "--", "anomalib_ssimae").split()
    state = f"with uncommitted changes to {sorted(changed)}" if changed else "as committed"
    return f"commit {subject(code)}; anomalib_ssimae/ {state}; inference code last changed in {subject(code, *INFERENCE_CODE)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs="+", default=["2048"], help="HEIGHTxWIDTH or one side, in pixels")
    parser.add_argument("--patch-batch-sizes", type=int, nargs="+", default=[64, 256, 100_000])
    parser.add_argument("--code", type=Path, nargs="+", default=[REPO], help="checkouts whose package is measured")
    parser.add_argument("--note", default="", help="a sentence for the header, e.g. on other load on the machine")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(parse_size(args.size[0]), args.child)
        return
    sys.path.insert(0, str(REPO))  # here, not at the top: the child processes import the package of --code
    from benchmarks.machine import describe

    # described once, before the runs: a commit made meanwhile in a shared checkout would mislabel later rows
    codes = {code.resolve(): describe_code(code.resolve()) for code in args.code}
    commits = {code: git(code, "rev-parse", "--short", "HEAD") for code in codes}
    rows = []
    for code in codes:
        for size in args.size:
            for value in args.patch_batch_sizes:
                out = subprocess.run(  # PYTHONPATH comes before the installed package: this checkout's is imported
                    [sys.executable, str(Path(__file__).resolve()), "--size", size, "--child", str(value)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONPATH": str(code)},
                ).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]) | {"code": commits[code]})
                print(rows[-1], flush=True)
    command = (
        f"python benchmarks/speed/large_image_memory.py --size {' '.join(args.size)} --patch-batch-sizes "
        f"{' '.join(map(str, args.patch_batch_sizes))} --code {' '.join(map(str, args.code))}"
    )
    lines = [
        "# Inference memory on one large image",
        "",
        f"`{command}` · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {describe()}",
        "",
        *([args.note, ""] if args.note else []),
        "Code measured (the `code` column):",
        "",
        *[f"- `{code}`: {text}" for code, text in codes.items()],
        "",
        (
            "Peak resident memory (`ru_maxrss`) of a fresh process mapping one image of random content with an untrained"
            " SSIM-AE (`model.model(image)`, grayscale, patch 128, stride 32: tiling, network, stitching, anomaly map"
            " and score); 'before' is the same process after importing torch and anomalib and building the model and"
            " the image, 'growth' the difference. `patch_batch_size` patches go through the network per call."
            " Image sizes are height x width."
        ),
        "",
        "| code | image (H x W) | patches | patch_batch_size | peak MiB | before MiB | growth MiB | seconds | score |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['code']} | {r['size'][0]} x {r['size'][1]} | {r['patches']} | {r['patch_batch_size']} | "
        f"{r['peak_mib']} | {r['before_mib']} | {r['peak_mib'] - r['before_mib']} | {r['seconds']} | {r['score']:.6f} |"
        for r in rows
    ]
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
