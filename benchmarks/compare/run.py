"""Our four variants against anomalib's own models, dataset by dataset, seed by seed.

    python benchmarks/compare/run.py --grid small             # 4 models x 2 datasets x 1 seed, ~30 min on 2 cores
    python benchmarks/compare/run.py --grid full              # 10 models x 6 datasets x 3 seeds, ~16 h on 2 cores
    python benchmarks/compare/run.py --grid full --tier long  # 20-minute training budget, ~47 h on 2 cores
    python benchmarks/compare/run.py --grid small --tier 600s # a budget of your own, in seconds (cells/600s/)
    python benchmarks/compare/run.py --grid full --match-steps # on another machine: the wall-clock cells' steps
    python benchmarks/compare/report.py                       # CSV, Markdown, plots, the READMEs' sections

Each cell (model, dataset, seed, tier) runs in its own process (``job.py``) and writes one JSON file under
``--out/cells/<tier>/<dataset>/<model>/seed<seed>.json`` (atomically, with the process log beside it; ``<model>`` is
``<model>-pretrained`` for anomalib's models run with ``--hf-cache``), so a grid is resumable: finished cells are
skipped, failed cells are rerun with ``--rerun-failed`` and every failure keeps its error in its JSON file and in the
report. anomalib's own ``anomalib benchmark`` is not used: in 2.7 it rejects models outside its allow-list, exits 0
when a job fails and writes no CSV if any job fails.

The protocol is the one of the offline anomalib runs on these datasets (raw scores, every test image):

- data: ``anomalib.data.MVTecAD`` on ``--data-root``; test = all of ``test/``; no validation
  (``limit_val_batches=0``), so nothing is fitted on test images;
- every model keeps its own pre-processing (anomalib's models: 256 x 256; ours: the image size of its
  ``configs/data/<dataset>.yaml``), and its masks are resized with it;
- post-processing off (``PostProcessor(enable_normalization=False, enable_thresholding=False)``): the clamp of the
  stock post-processor moved image AUROC by up to 0.10; all metrics are threshold-free except F1Max;
- metrics: image AUROC and F1Max, pixel AUROC and AUPRO (FPR <= 0.3); for our variants also the paper's protocol
  (Rádli & Czúni 2021 §4, :class:`~anomalib_ssimae.metrics.PaperProtocolAUROC`) on the 1 - SSIM residual;
- budget: models that train get the same wall-clock cap (``max_time``; short 300 s, long 1200 s). Our variants run
  the recipe of their configs, with the cosine schedule fitted to the cap. The memory-bank models make their one
  pass (their short-tier cell serves every tier); PatchCore uses at most 100 training images (so that its coreset
  search stays within minutes on 2 cores);
- another machine: a wall-clock budget buys another number of steps on another CPU, so cells run there are not
  comparable with the grid's. ``--match-steps`` trains each cell for the optimiser steps of the same model's
  wall-clock cells on the same dataset and tier (the most any seed reached on the machine that ran most of them:
  on one machine, sharing the CPU only lowers a count), with
  ``max_steps`` instead of ``max_time`` (:func:`cells.reference_steps`). A wall-clock cell that reached fewer than
  :data:`cells.STARVED` of the steps of its best sibling on the same machine lost its budget to something else on the
  CPU: the report leaves it out of the means and lists it, and ``--rerun-starved`` reruns it (the old record and
  log kept as ``seed<N>.json.starved`` and ``seed<N>.log.starved``). A cell with no other seed on its machine is
  judged against its twin's (the denoising and the plain variant train the same network: :data:`cells.TWINS`); a model
  whose wall-clock cells were all starved takes its twin's steps. A cell that finished but was found collapsed
  afterwards (by a collapse guard that missed it at the time) is marked by hand as failed, with ``collapsed`` saying
  what was seen; it keeps its step count as a reference (:func:`cells.collapsed_cells`);
- each record says the precision it trained in (``precision``: our variants pick bf16 only on CPUs with bf16 units);
- no pretrained weights can be downloaded here: ImageNet backbones run with ``pre_trained: false`` (labelled) unless
  ``--hf-cache DIR`` points to a Hugging Face cache that holds timm's weights of the backbone (resnet18:
  ``timm/resnet18.a1_in1k``); they are then loaded offline from it (:func:`job.use_hf_cache`), or the cell fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.compare.cells import GRIDS, OURS, PEERS, STARVED, add_cell_options, dataset_arg, tier_arg
from benchmarks.compare.runner import run_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=GRIDS, default="small",
                        help="small: SSIM-AE, PaDiM, PatchCore, FastFlow on two datasets, seed 42 (8 cells, ~30 min "
                        "on 2 cores); full: every model, dataset and seeds 42-44 (180 cells, ~16 h) "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--tier", type=tier_arg, default="short", help=tier_arg.__doc__)
    parser.add_argument("--models", nargs="+", choices=(*OURS, *PEERS))
    parser.add_argument("--datasets", nargs="+", metavar="DATASET", type=dataset_arg,
                        help="folders under --data-root in MVTec AD layout (default: the grid's); our variants "
                        "need configs/data/<DATASET>.yaml")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, help="(default: the grid's)")
    parser.add_argument(
        "--rerun-failed",
        action="store_true",
        help="run failed cells again; the old record and log are kept as seed<N>.json.failed and seed<N>.log.failed",
    )
    parser.add_argument("--rerun-starved", action="store_true",
                        help=f"rerun wall-clock cells that trained fewer than {STARVED:.0%}% of their best sibling's "
                        "steps on the same machine (the CPU was shared); the old record and log are kept as "
                        "seed<N>.json.starved and seed<N>.log.starved")  # fmt: skip
    add_cell_options(parser)
    return run_grid(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
