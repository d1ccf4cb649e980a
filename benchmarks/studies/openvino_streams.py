"""Does OpenVINO's THROUGHPUT hint (several streams) give the same outputs as the package's one stream?

Exports SsimAe (untrained, or ``--ckpt``) at ``--image-size`` and runs the embedded test images (512 x 208) through
:meth:`~anomalib_ssimae.deploy.OpenVinoDetector.imap` twice: compiled as the package compiles it (``LATENCY``, one
stream, one request in flight) and with ``PERFORMANCE_HINT: THROUGHPUT`` (its optimal number of requests in flight),
both f32, three times. Appends the largest score and map differences to ``benchmarks/results/openvino_streams.md``.

    python benchmarks/studies/openvino_streams.py [--image-size 256 | --image-size 208 512] [--ckpt CKPT]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
import anomalib_ssimae
from anomalib_ssimae.deploy import OpenVinoDetector
from benchmarks.machine import append_markdown, describe

REPO = Path(__file__).resolve().parents[2]
REPEATS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs="+", default=[256])
    parser.add_argument("--ckpt", type=Path, help="a trained SsimAe checkpoint (its own image size)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "openvino_streams.md")
    args = parser.parse_args()
    paths = sorted((REPO / "datasets" / "bsdata_pitting_mini" / "test").rglob("*.png"))
    images = [np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255 for p in paths]
    if args.ckpt:
        model = anomalib_ssimae.SsimAe.load_from_checkpoint(args.ckpt).eval()
    else:
        size = args.image_size[0] if len(args.image_size) == 1 else args.image_size
        model = anomalib_ssimae.SsimAe(image_size=size, visualizer=False)
    size = " x ".join(str(v) for v in model._image_size)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        xml = model.to_openvino(Path(work))
        reference = [r for _, r in OpenVinoDetector(xml).imap(enumerate(images), 1)]
        for repeat in range(REPEATS):
            detector = OpenVinoDetector(xml)
            detector.compiled = ov.Core().compile_model(
                str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
            )
            jobs = detector.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            outputs = [r for _, r in detector.imap(enumerate(images), jobs)]
            pairs = list(zip(reference, outputs, strict=True))
            score = max(float(np.abs(a["pred_score"] - b["pred_score"]).max()) for a, b in pairs)
            amap = max(float(np.abs(a["anomaly_map"] - b["anomaly_map"]).max()) for a, b in pairs)
            rows.append((repeat + 1, jobs, score, amap))
            print(f"repeat {repeat + 1}: {jobs} requests, score change {score:.3g}, map change {amap:.3g}")
    lines = [
        (
            f"\n## {datetime.date.today()} · SsimAe ({args.ckpt or 'untrained'}) at {size}, {len(images)} images "
            f"of 512 x 208 · {describe()} · OpenVINO {ov.__version__} · f32\n"
        ),
        "| repeat | THROUGHPUT requests | largest score change | largest map change |",
        "|---|---|---|---|",
        *(f"| {r} | {j} | {s:.3g} | {m:.3g} |" for r, j, s, m in rows),
        "\nAgainst the package's compilation (LATENCY, one request). `python benchmarks/studies/openvino_streams.py`.\n",
    ]
    append_markdown(args.out, "OpenVINO THROUGHPUT hint against one stream: the same outputs?", lines)


if __name__ == "__main__":
    main()
