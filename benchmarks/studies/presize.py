"""Copy an MVTec-layout dataset with every image resized by PIL's antialiased bilinear filter (masks: nearest).

The package resizes without antialiasing (the exported graph cannot antialias; see the SSIM-AE card), so a dataset
whose images are much larger than ``image_size`` and carry fine periodic texture may alias. Training and scoring on a
pre-resized copy (whose resize in the package is then the identity) measures whether that matters:

    python benchmarks/studies/presize.py ../shared/datasets/magnetic_tile results/presized --size 256 256
    python benchmarks/quality/convergence.py magnetic_tile --data-root results/presized --crops 50000 --name antialiased_...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the dataset folder, e.g. DIR/magnetic_tile")
    parser.add_argument("target", type=Path, help="a new folder; the copy goes to TARGET/<dataset>")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=(256, 256))
    args = parser.parse_args()
    target = args.target / args.source.name
    if target.exists():
        parser.error(f"{target} exists: choose another target")
    height, width = args.size
    for path in sorted(args.source.rglob("*.png")):
        out = target / path.relative_to(args.source)
        out.parent.mkdir(parents=True, exist_ok=True)
        resample = Image.NEAREST if "ground_truth" in path.parts else Image.BILINEAR
        Image.open(path).resize((width, height), resample).save(out)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
