"""Inference time per image: torch eager vs exported OpenVINO (f32, and bf16 with its error) and ONNX Runtime.

For each model and image size: a model with that ``image_size`` (random weights: speed does not depend on them;
post-processing constants set so normalisation and thresholds are in the graph), exported with ``to_openvino`` and
``to_onnx`` (timed, file sizes). Input: one (1, 3, S, S) image of that size (no resize work). Median wall time of
``--repeats`` calls after 3 warm-up calls. Appends a Markdown table to benchmarks/results/inference_speed.md.

    python benchmarks/speed/inference_speed.py [--sizes 256 512] [--models SsimAe SsimAeExtended] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
import anomalib_ssimae
from benchmarks.machine import describe

REPO = Path(__file__).resolve().parents[2]


def median_ms(function: object, repeats: int) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def matmul_gflops(threads: int, size: int = 2048) -> float:
    """fp32 matrix-multiply throughput of this CPU with ``threads`` threads (the compute ceiling for convolutions)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    milliseconds = median_ms(lambda: a @ b, 10)
    return 2 * size**3 / (milliseconds / 1000) / 1e9


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix != ".json") / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--models", nargs="+", default=["SsimAe", "SsimAeExtended"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort
    import openvino as ov

    core = ov.Core()
    gflops = matmul_gflops(args.threads)
    header = (
        f"\n## {date.today()} · {describe()} · {args.threads} thread(s) · median of {args.repeats} · "
        f"fp32 matmul {gflops:.0f} GFLOP/s (so SSIM-AE's 6.1 GFLOP per 256 x 256 image needs at least "
        f"{6.1 / gflops * 1000:.0f} ms)\n\n"
        "| model | image | patches | torch eager ms | OpenVINO f32 ms | OpenVINO bf16 ms (max map diff) "
        "| ONNX Runtime ms | OV f32 vs torch max map diff | export s (OV) | OV files MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    print(header, end="", flush=True)
    out = REPO / "benchmarks" / "results" / "inference_speed.md"
    with out.open("a") as f:
        f.write(header)
    for name in args.models:
        for size in args.sizes:
            model = getattr(anomalib_ssimae, name)(image_size=size, visualizer=False, evaluator=False).eval()
            post = model.post_processor
            for buffer, value in (
                ("_image_threshold", 0.9),
                ("_pixel_threshold", 0.6),
                ("image_min", 0.5),
                ("image_max", 1.3),
                ("pixel_min", 0.0),
                ("pixel_max", 1.2),
            ):
                getattr(post, buffer).fill_(value)
            image = torch.rand(1, 3, size, size)
            with torch.no_grad():
                reference = model(image).anomaly_map.numpy()
                eager = median_ms(lambda: model(image), args.repeats)  # noqa: B023
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                xml = model.to_openvino(tmp)
                export_s = time.perf_counter() - start
                onnx = model.to_onnx(tmp)
                files = size_mb(xml.parent)
                array = image.numpy()
                results = {}
                for precision in ("f32", "bf16"):
                    try:
                        compiled = core.compile_model(
                            str(xml),
                            "CPU",
                            {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": args.threads},
                        )
                        maps = {p.get_any_name(): v for p, v in compiled(array).items()}["anomaly_map"]
                        results[precision] = (
                            median_ms(lambda: compiled(array), args.repeats),  # noqa: B023
                            float(np.abs(maps - reference).max()),
                        )
                    except RuntimeError as error:  # bf16 is not available on every CPU
                        results[precision] = (float("nan"), f"n/a: {str(error).splitlines()[0][:60]}")
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                session = ort.InferenceSession(str(onnx), options)
                onnx_ms = median_ms(lambda: session.run(None, {"input": array}), args.repeats)  # noqa: B023
            patches = model.model.tiler.num_patches(size, size)
            bf16 = results["bf16"]
            bf16_text = f"{bf16[0]:.1f} ({bf16[1]:.2g})" if isinstance(bf16[1], float) else bf16[1]
            row = (
                f"| {name} | {size} x {size} | {patches} | {eager:.1f} | {results['f32'][0]:.1f} | {bf16_text} "
                f"| {onnx_ms:.1f} | {results['f32'][1]:.1g} | {export_s:.1f} | {files:.1f} |\n"
            )
            print(row, end="", flush=True)
            with out.open("a") as f:
                f.write(row)


if __name__ == "__main__":
    main()
