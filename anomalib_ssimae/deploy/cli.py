"""``ssimae-predict``: the command-line entry point for folder prediction with an exported OpenVINO model.

    ssimae-predict results/.../weights/openvino/model.xml path/to/images out/ [--image-fpr 0.01]

writes ``out/predictions.jsonl`` (one JSON record per image: score, label, threshold, defect regions) and
``out/overlays/<name>.png``. Existing results are never overwritten.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from anomalib_ssimae.deploy.inference import OpenVinoDetector, predict_folder


def main(argv: list[str] | None = None) -> None:
    """``ssimae-predict``: folder prediction with an exported OpenVINO model (see module docstring)."""
    parser = argparse.ArgumentParser(
        prog="ssimae-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="model.xml from anomalib export --export_type openvino")
    parser.add_argument("input_dir", help="folder of images (searched recursively), or one image file")
    parser.add_argument("output_dir", help="new folder for predictions.jsonl and overlays/")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"])
    parser.add_argument("--jobs", type=int, default=2, help="inference requests in flight (reading overlaps)")
    image = parser.add_mutually_exclusive_group()
    image.add_argument("--image-threshold", type=float, help="raw image threshold (replaces the exported one)")
    image.add_argument("--image-fpr", type=float, help="image false-positive rate on the defect-free images")
    pixel = parser.add_mutually_exclusive_group()
    pixel.add_argument("--pixel-threshold", type=float, help="raw pixel threshold")
    pixel.add_argument(
        "--pixel-fpr",
        type=float,
        help="pixel false-positive rate on the defect-free images (min_defect_area is not re-applied)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        detector = OpenVinoDetector(
            args.model,
            args.precision,
            args.image_threshold,
            args.pixel_threshold,
            args.image_fpr,
            args.pixel_fpr,
        )
        path = predict_folder(detector, args.input_dir, args.output_dir, jobs=args.jobs)
    except (OSError, ValueError) as error:  # a clear one-line message, no traceback
        parser.exit(2, f"ssimae-predict: error: {error}\n")
    except KeyboardInterrupt:
        partial = Path(args.output_dir) / "predictions.jsonl.partial"
        parser.exit(130, f"ssimae-predict: interrupted; the finished records are in {partial}\n")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    flagged = sum(1 for r in lines if r.get("label") == "anomalous")
    failed = sum(1 for r in lines if "error" in r)
    print(
        f"{len(lines) - failed} images predicted, {flagged} anomalous, {failed} unreadable. Records: {path}  "
        f"Overlays: {path.parent / 'overlays'}"
    )
    if failed == len(lines):
        parser.exit(1, "ssimae-predict: error: no image could be read (see the records)\n")


if __name__ == "__main__":
    main()
