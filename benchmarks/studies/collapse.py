"""Why SSIM-AE collapsed on DeepPCB (and the extended nets on magnetic_tile), and what trains instead: the package's
own training (``Engine.fit`` with the model and data configs), a few hundred optimiser steps per setting, watching
every step.

    python benchmarks/studies/collapse.py [--dataset deeppcb] [--data-root ../shared/datasets] [--steps 400]
    python benchmarks/studies/collapse.py --model ssim_ae_extended --dataset magnetic_tile --seed 43 --steps 1160 \
        --settings configs fp32 lr5e-4

Per setting it records, every 25 optimiser steps, the training loss, the spread of the reconstruction over the
crops, the largest output logit (before the sigmoid), the mean |latent| and the gradient norm (median and maximum over
the 25 steps). A run stops at ``max_steps`` or when the model's collapse guard fires (the same
saturated reconstruction for every crop, 50 steps in a row).
Writes ``benchmarks/results/collapse.md`` (appends a section per run of this script).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import torch
from anomalib.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import append_markdown, commit, describe
from benchmarks.quality.convergence import build, load_config

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {  # key -> (name, model init_args over the configs'); the deeppcb config itself now trains with the L2 loss
    "configs": ("configs (ssim loss, cosine 1e-3, bf16 where the CPU has it)", {"loss": "ssim"}),
    "paper": (
        "ssim loss, paper's lr 2e-4, fp32",
        {"loss": "ssim", "learning_rate": 2e-4, "train_precision": "32-true"},
    ),
    "l2": ("l2 loss (configs otherwise)", {"loss": "l2"}),
    "fp32": ("ssim loss, cosine 1e-3, fp32", {"loss": "ssim", "train_precision": "32-true"}),
    "lr5e-4": ("ssim loss, cosine 5e-4, bf16 where the CPU has it", {"loss": "ssim", "learning_rate": 5e-4}),
}
DEFAULT = ("configs", "paper", "l2")
EVERY = 25


def run(model_name: str, dataset: str, root: Path, steps: int, overrides: dict) -> dict:
    config = load_config([REPO / f"configs/model/{model_name}.yaml", REPO / f"configs/data/{dataset}.yaml"])
    model, datamodule = build(config, overrides | {"visualizer": False}, str(root))
    trace: list[dict] = []
    state: dict = {}
    network = model.model.network
    network.encoder.register_forward_hook(lambda m, i, o: state.update(z=o.detach().float().abs().mean().item()))
    network.output_layer.register_forward_hook(lambda m, i, o: state.update(logit=o.detach().float().max().item()))

    def after_loss(module: torch.nn.Module, inputs: tuple, loss: torch.Tensor) -> None:
        step = len(state.setdefault("losses", []))
        state["losses"].append(loss.item())
        if model.grad_norm is not None:  # the previous step's
            state.setdefault("norms", []).append(float(model.grad_norm))
        if step % EVERY == 0:
            reconstruction = inputs[1].detach().float()
            norms = state.pop("norms", [float("nan")])
            trace.append({"step": step, "loss": loss.item(), "rec_std": reconstruction.std().item(),
                          "logit_max": state["logit"], "z_abs": state["z"], "norm": max(norms),
                          "norm_median": sorted(norms)[len(norms) // 2]})  # fmt: skip

    model.loss.register_forward_hook(after_loss)
    engine = Engine(accelerator="cpu", devices=1, logger=False, max_epochs=5, max_steps=steps,
                    limit_val_batches=0, enable_progress_bar=False,
                    default_root_dir=REPO / "results" / "collapse")  # fmt: skip
    start = time.perf_counter()
    try:
        engine.fit(model, datamodule=datamodule)
        outcome = f"trained {len(state['losses'])} steps"
    except FloatingPointError as error:
        outcome = "collapsed: " + str(error).split(":")[0]
    return {"outcome": outcome, "seconds": time.perf_counter() - start, "trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="deeppcb")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--steps", type=int, default=400, help="max_steps, which the cosine schedule is fitted to")
    parser.add_argument("--model", default="ssim_ae", help="configs/model/<model>.yaml")
    parser.add_argument("--seed", type=int, default=42, help="the model's seed (init, crops, masks)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=DEFAULT)
    args = parser.parse_args()
    title = (
        f"{args.dataset}, {args.model} seed {args.seed}, {args.steps} steps"
        if args.model != "ssim_ae"
        else args.dataset
    )
    lines = ["", f"## {title}, {date.today().isoformat()}", "", f"{describe()} · commit {commit()}", ""]
    for key in args.settings:
        name, overrides = SETTINGS[key]
        result = run(args.model, args.dataset, args.data_root, args.steps, overrides | {"seed": args.seed})
        print(name, result["outcome"], flush=True)
        lines += [f"### {name}: {result['outcome']} ({result['seconds']:.0f} s)", "",
                  ("| step | loss | reconstruction sd | max output logit | mean abs latent | gradient norm: median, "
                   "max over the last 25 steps |"), "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t['step']} | {t['loss']:.4f} | {t['rec_std']:.4f} | {t['logit_max']:.3g} | {t['z_abs']:.3g} | "
                  f"{t['norm_median']:.3g}, {t['norm']:.3g} |" for t in result["trace"]]  # fmt: skip
        lines.append("")
    append_markdown(REPO / "benchmarks" / "results" / "collapse.md", "Training collapse", lines)


if __name__ == "__main__":
    main()
