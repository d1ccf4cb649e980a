"""Does every shipped model config x data config pair train without collapse? (issue 27)

Each cell is one training of a model config with a data config and a seed, by the package's own ``Engine.fit``,
for the first ``--steps`` optimiser steps of the configs' full schedule (the warm-up and cosine are sized to the data
config's ``max_epochs``, as in a real run; the run is cut at ``--steps``). No validation. Every optimiser step
records the gradient norm and the latent scale (mean |latent| of the step's crops); every 25 steps the trace keeps
the loss, the median and maximum gradient norm and the maximum latent scale of those 25 steps. A cell ends
"trained" at ``--steps`` or "collapsed" when the model's collapse guard fires (it raises ``FloatingPointError``).

    python benchmarks/quality/stability.py                                   # 4 models x 7 data configs x 5 seeds
    python benchmarks/quality/stability.py --models ssim_ae_extended --data hazelnut_toy --seeds 42 --set learning_rate=5e-4 \
        --tag lr5e-4

Cells are stored one JSON file each under ``benchmarks/results/stability/<tag>/`` (written atomically; an existing
cell is skipped, so an interrupted run resumes where it stopped), with machine, CPU flags, date and commit. The
report ``benchmarks/results/stability.md`` is rewritten from every stored cell after each cell. Run one at a time:
two trainings side by side on 2 cores slow both (the outcome does not depend on speed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from anomalib.engine import Engine
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import code_commit, describe
from benchmarks.quality.convergence import build, load_config, parse_value

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / "benchmarks" / "results" / "stability"
REPORT = REPO / "benchmarks" / "results" / "stability.md"
MODELS = ("ssim_ae", "ssim_dae", "ssim_ae_extended", "ssim_dae_extended")
DATA = (
    "quickstart",
    "mvtec_ad_grid_mini",
    "bsdata_pitting",
    "deeppcb",
    "hazelnut_toy",
    "magnetic_tile",
    "mvtec3d_tire",
)
SEEDS = (42, 43, 44, 45, 46)
EVERY = 25


class StopAt(Callback):
    """Cut the run at ``steps`` optimiser steps after the model has sized its schedule to the whole training."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.fit_loop.epoch_loop.max_steps = (
            self.steps
        )  # the model's steps_are_up() reads it between optimiser steps


def scale_by_fan_in(model: torch.nn.Module, reference: int) -> None:
    """Experiment (not a package option): each convolution's learning rate times ``min(1, reference / fan_in)``.

    Adam moves every weight by about the learning rate whatever its gradient, so a unit's pre-activation can move by
    about ``lr x sum |inputs|`` per step: layers with a large fan-in move fastest. The schedule sets every group's
    rate; the factor is applied on top of it here by wrapping ``CosineLearningRate.apply``.
    """
    from anomalib_ssimae.components import schedule

    configure = model.configure_optimizers

    def grouped() -> object:
        optimizer = configure()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        groups = []
        for module in model.model.network.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
                if module is model.model.network.decoder[0]:  # from the 1 x 1 latent: latent_dim inputs per output
                    fan_in = module.in_channels
                elif isinstance(module, torch.nn.ConvTranspose2d):  # inputs per output: in x kernel / stride^2
                    kernel = module.kernel_size[0] * module.kernel_size[1]
                    fan_in = module.in_channels * kernel // (module.stride[0] * module.stride[1])
                groups.append({"params": list(module.parameters()), "lr_scale": min(1.0, reference / fan_in)})
        optimizer.param_groups.clear()
        optimizer.state.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    model.configure_optimizers = grouped
    apply = schedule.CosineLearningRate.apply
    if getattr(apply, "scaled", False):
        return

    def scaled(self, optimizer, step) -> None:
        apply(self, optimizer, step)
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)

    scaled.scaled = True
    schedule.CosineLearningRate.apply = scaled


def train_cell(model_name: str, dataset: str, seed: int, steps: int, overrides: dict, data_root: str,
               fan_in_reference: int | None = None, layers: bool = False) -> dict:  # fmt: skip
    """One training, traced; returns the cell record (without provenance)."""
    config = load_config([REPO / f"configs/model/{model_name}.yaml", REPO / f"configs/data/{dataset}.yaml"])
    if dataset == "quickstart":  # embedded data: the config's relative root is the repository's
        data_root = str(REPO / config["data"]["init_args"]["root"])
    model, datamodule = build(config, overrides | {"seed": seed, "visualizer": False}, data_root)
    state: dict = {"losses": [], "latent": [], "norms": []}
    model.model.network.encoder.register_forward_hook(
        lambda m, i, o: state["latent"].append(o.detach().float().abs().mean().item()) if m.training else None
    )
    trace: list[dict] = []
    if fan_in_reference:
        scale_by_fan_in(model, fan_in_reference)
    convs = [(name, m) for name, m in model.model.network.named_modules()
             if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)] if layers else []  # fmt: skip
    for name, module in convs:
        module.register_forward_hook(
            lambda m, i, o, name=name: (
                state.setdefault(name, []).append(o.detach().float().abs().mean().item()) if m.training else None
            )
        )

    def after_loss(module: torch.nn.Module, inputs: tuple, loss: torch.Tensor) -> None:
        if model.grad_norm is not None and state["losses"]:  # the previous step's
            state["norms"].append(float(model.grad_norm))
        state["losses"].append(loss.item())
        step = len(state["losses"]) - 1
        if step % EVERY == EVERY - 1:
            norms = state["norms"][-EVERY:] or [float("nan")]
            trace.append({"step": step + 1, "loss": loss.item(), "grad_norm_median": statistics.median(norms),
                          "grad_norm_max": max(norms), "latent_max": max(state["latent"][-EVERY:]),
                          **{f"layer {name}": max(state[name][-EVERY:]) for name, _ in convs}})  # fmt: skip

    model.loss.register_forward_hook(after_loss)
    max_epochs = int(config["trainer"]["max_epochs"])
    engine = Engine(accelerator="auto", devices=1, logger=False, max_epochs=max_epochs, limit_val_batches=0,
                    enable_progress_bar=False, callbacks=[StopAt(steps)],
                    default_root_dir=REPO / "results" / "stability")  # fmt: skip
    start = time.perf_counter()
    try:
        engine.fit(model, datamodule=datamodule)
        outcome, message = "trained", ""
    except FloatingPointError as error:
        outcome, message = "collapsed", str(error).split("\n")[0]
    norms = state["norms"] or [float("nan")]
    return {
        "outcome": outcome,
        "message": message,
        "steps": len(state["losses"]),
        "seconds": round(time.perf_counter() - start, 1),
        "schedule_steps": max_epochs * -(-model.hparams.crops_per_epoch // model.hparams.batch_size),
        "learning_rate": model.hparams.learning_rate,
        "warmup_crops": model.hparams.warmup_crops,
        "loss_function": model.hparams.loss,
        "precision": "bf16-mixed" if model._bf16 else "32-true",
        "grad_norm_max": max(norms),
        "grad_norm_median": statistics.median(norms),
        "latent_max": max(state["latent"] or [float("nan")]),
        "final_loss": state["losses"][-1] if state["losses"] else float("nan"),
        "trace": trace,
    }


DEAD = 1e-6  # a gradient norm below this (healthy runs: 0.02-3) means no gradient passes the saturated sigmoid


def verdict(cell: dict) -> str:
    """``collapsed`` when the model's guard stopped the run, or when two trace windows in a row (50 steps) had no
    gradient (norm below :data:`DEAD` at every step): the network is dead whether or not the guard saw it."""
    if cell["outcome"] == "collapsed":
        return "collapsed"
    dead = [t["grad_norm_max"] < DEAD for t in cell["trace"]]
    return "dead" if any(a and b for a, b in itertools.pairwise(dead)) else "trained"


def first_dead_step(cell: dict) -> int:
    """The step of the first window without gradient (``steps`` when the guard stopped the run)."""
    return next((t["step"] for t in cell["trace"] if t["grad_norm_max"] < DEAD), cell["steps"])


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def report() -> None:
    """Rewrite the report from every stored cell: one table per tag, a row per model x data pair."""
    lines = ["# Training stability: every model config x data config pair, first optimiser steps per seed", "",
             ("Written by `python benchmarks/quality/stability.py` from the cells in `benchmarks/results/stability/<tag>/`"
             " (one JSON file per training, with its trace every 25 steps). Gradient norm: global L2 norm of a step's"
             " gradients; latent scale: mean |latent| of a step's crops. Maxima over all steps of all seeds. A seed counts as collapsed when the model's collapse guard stopped it, or when no gradient passed for 50 steps in a row (norm below 1e-6 at every step: guard silent: the guard did not stop it)."), ""]  # fmt: skip
    for tag_dir in sorted(p for p in STORE.iterdir() if p.is_dir()) if STORE.exists() else []:
        cells = [json.loads(p.read_text()) for p in sorted(tag_dir.rglob("seed*.json"))]
        if not cells:
            continue
        machines = sorted({c["machine"] for c in cells})
        commits = sorted({c["commit"] for c in cells})
        lines += [f"## {tag_dir.name}: settings {cells[0]['settings'] or 'the configs'}", "",
                  (f"Machines: {'; '.join(machines)}. Commits: {', '.join(commits)}."
                  f" Dates: {min(c['date'] for c in cells)} to {max(c['date'] for c in cells)}."), "",
                  ("| model | data | seeds trained / run | steps | lr, warm-up crops, loss, precision | "
                  "gradient norm: median, max | latent scale max | collapsed or dead (seed: step) |"),
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        pairs: dict[tuple, list] = {}
        for cell in cells:
            pairs.setdefault((cell["model"], cell["data"]), []).append(cell)
        order = {name: i for i, name in enumerate(MODELS + DATA)}
        for (model_name, data), group in sorted(
            pairs.items(), key=lambda kv: (order.get(kv[0][0], 99), order.get(kv[0][1], 99))
        ):
            trained = sum(verdict(c) == "trained" for c in group)
            first = group[0]
            recipe = (
                f"{first['learning_rate']:g}, {first['warmup_crops']}, {first['loss_function']}, {first['precision']}"
            )
            collapsed = (
                ", ".join(
                    f"{c['seed']}: {first_dead_step(c)}{'' if verdict(c) == 'collapsed' else ' (guard silent)'}"
                    for c in group
                    if verdict(c) != "trained"
                )
                or "none"
            )
            lines.append(
                f"| {model_name} | {data} | {trained} / {len(group)} | {max(c['steps'] for c in group)} | {recipe} | "
                f"{statistics.median(c['grad_norm_median'] for c in group):.3g}, "
                f"{max(c['grad_norm_max'] for c in group):.3g} | {max(c['latent_max'] for c in group):.3g} | "
                f"{collapsed} |"
            )
        lines.append("")
    write_atomic(REPORT, "\n".join(lines))


def layer_trace(cell_path: Path, first: int, last: int) -> str:
    """Markdown: every convolution's mean |output| per trace window of a cell run with ``--layers``, steps
    ``first``-``last``, a column per layer in the order of the forward pass (encoder, then decoder)."""
    cell = json.loads(cell_path.read_text())
    keys = [key for key in cell["trace"][0] if key.startswith("layer ")]
    if not keys:
        msg = f"{cell_path} has no layer trace: run the cell with --layers"
        raise SystemExit(msg)
    names = [key.removeprefix("layer ").replace("encoder.", "e").replace("decoder.", "d") for key in keys]
    lines = [f"| step | gradient norm max | {' | '.join(names)} |", "|---" * (len(keys) + 2) + "|"]
    for t in cell["trace"]:
        if first <= t["step"] <= last:
            values = " | ".join(f"{t[key]:.2g}" for key in keys)
            lines.append(f"| {t['step']} | {t['grad_norm_max']:.3g} | {values} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--data", nargs="+", default=DATA, choices=DATA)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per cell")
    parser.add_argument("--set", nargs="*", default=[], help="model init_args over the configs', key=value")
    parser.add_argument("--fan-in-reference", type=int, help="experiment: scale_by_fan_in(model, N)")
    parser.add_argument("--layers", action="store_true", help="trace every convolution's mean |output|")
    parser.add_argument("--tag", default="configs", help="store folder of these settings")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the stored cells")
    parser.add_argument("--layer-trace", type=Path, metavar="CELL_JSON", help="print a --layers cell's trace")
    parser.add_argument("--between", type=int, nargs=2, default=(0, 10**9), metavar=("FIRST", "LAST"))
    args = parser.parse_args()
    if args.layer_trace:
        print(layer_trace(args.layer_trace, *args.between))
        return
    if args.report_only:
        report()
        return
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {key: parse_value(value) for key, value in overrides.items()}
    machine = describe()
    for seed in args.seeds:  # seeds outermost: every pair gets its first seed before any gets its fifth
        for data in args.data:
            for model_name in args.models:
                path = STORE / args.tag / model_name / data / f"seed{seed}.json"
                if path.exists():
                    continue
                cell = train_cell(
                    model_name, data, seed, args.steps, overrides, args.data_root, args.fan_in_reference, args.layers
                )
                cell = {"model": model_name, "data": data, "seed": seed, "settings": args.set + ([f"fan_in_reference={args.fan_in_reference}"] if args.fan_in_reference else []), "machine": machine,
                        "commit": code_commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        **cell}  # fmt: skip
                write_atomic(path, json.dumps(cell, indent=1))
                print(f"{model_name} {data} seed {seed}: {cell['outcome']} at step {cell['steps']} "
                      f"({cell['seconds']:.0f} s, grad norm max {cell['grad_norm_max']:.3g}, "
                      f"latent max {cell['latent_max']:.3g})", flush=True)  # fmt: skip
                report()


if __name__ == "__main__":
    main()
