"""Detection quality against training crops: train once, keep checkpoints at log-spaced crop counts, score each.

Training is the package's own (``Engine.fit`` of the model in the config, its crops, loss and optimiser), with
validation switched off so that only training is timed; checkpoints are written when the number of training crops
(optimiser steps x batch size) passes each point. Each checkpoint is then scored by ``evaluate.py`` on all test
images (raw maps; pixel AUROC, AUPRO, image AUROC of several scores, border-band ratio, val_loss). One CSV row per
checkpoint goes to ``benchmarks/results/convergence.csv``, stamped with machine, date and commit; the full JSON per
checkpoint stays in the run folder.

    python benchmarks/quality/convergence.py mvtec_ad_grid_mini --crops 300000 [--seed 42] [--set learning_rate=1e-3 ...]
        [--config configs/model/ssim_ae.yaml configs/data/mvtec_ad_grid_mini.yaml] [--data-root ../shared/datasets]
        [--name NAME] [--precision auto|32-true|bf16-mixed] [--eval-only]

    # the embedded quickstart data:
    python benchmarks/quality/convergence.py bsdata_pitting_mini --data-root datasets \
        --config configs/model/ssim_ae.yaml configs/data/quickstart.yaml
    # the paper's recipe (the configs use the cosine schedule):
    ... --set lr_schedule=constant learning_rate=2e-4 batch_size=128

``--config`` takes a model config and a data config (default: ``configs/model/ssim_ae.yaml`` and
``configs/data/<dataset>.yaml``), merged in that order as ``anomalib train --config A --config B`` merges them; the
run name starts with the model config's name.

``--precision auto`` (default) trains in bf16-mixed where the CPU has bf16 units (AVX512-BF16 or AMX), fp32
elsewhere, as the package does.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import sys
import time
from datetime import date
from pathlib import Path

import torch
import yaml
from anomalib.engine import Engine
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import commit, describe
from benchmarks.quality.evaluate import evaluate, load_model

REPO = Path(__file__).resolve().parents[2]
POINTS = (10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000, 1_000_000, 2_000_000)
CSV = REPO / "benchmarks" / "results" / "convergence.csv"


class CropCheckpoints(Callback):
    """Save the model's weights and hyper-parameters when the crops seen pass each of ``points``."""

    def __init__(self, points: list[int], folder: Path) -> None:
        self.points = sorted(points)
        self.folder = folder
        self.fit_seconds = 0.0
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        del trainer, pl_module, batch, batch_idx
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        del outputs, batch, batch_idx
        self.fit_seconds += time.perf_counter() - self._start
        crops = trainer.global_step * pl_module.hparams.batch_size
        while self.points and crops >= self.points[0]:
            self.points.pop(0)
            state = {
                "hyper_parameters": dict(pl_module.hparams),
                "state_dict": {k: v.clone() for k, v in pl_module.state_dict().items() if k.startswith("model.")},
                "module_class": type(pl_module),
                "crops": crops,
                "fit_seconds": self.fit_seconds,
            }
            torch.save(state, self.folder / f"crops_{crops:08d}.pt")
            print(f"checkpoint at {crops} crops, {self.fit_seconds:.0f} s of training", flush=True)


def auto_precision() -> str:
    """``bf16-mixed`` where the CPU has bf16 units, else ``32-true`` (see ``anomalib_ssimae.precision``)."""
    from anomalib_ssimae.precision import training_precision

    return training_precision("auto")


def merge(base: dict, extra: dict) -> dict:
    """A later config merged into an earlier one as jsonargparse merges ``--config`` files: mappings key by key,
    anything else (lists too) replaced."""
    merged = dict(base)
    for key, value in extra.items():
        both_maps = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both_maps else value
    return merged


def load_config(paths: list[Path]) -> dict:
    """The merged YAML of ``paths`` (model config first, then data config)."""
    config: dict = {}
    for path in paths:
        config = merge(config, yaml.safe_load(path.read_text()))
    return config


def build(config: dict, overrides: dict, data_root: str) -> tuple:
    """Model and datamodule from a YAML config dict."""

    def instantiate(spec: dict, extra: dict) -> object:
        module, name = spec["class_path"].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **extra})

    model = instantiate(config["model"], overrides)
    datamodule = instantiate(config["data"], {"root": data_root})
    return model, datamodule


def parse_value(text: str) -> object:
    """YAML scalar of a ``--set key=value`` (``1e-3`` is a float here, not YAML 1.1's string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument(
        "--config",
        type=Path,
        nargs="+",
        metavar="YAML",
        help="model config, then data config (default: configs/model/ssim_ae.yaml configs/data/<dataset>.yaml)",
    )
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--crops", type=int, default=300_000, help="training length in crops")
    parser.add_argument("--points", type=int, nargs="*", help="checkpoint crop counts (default: log-spaced)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--set", nargs="*", default=[], help="model init_args overrides, key=value")
    parser.add_argument("--name", help="run name (default: from the settings)")
    parser.add_argument("--loss-padding", help="experiment: SSIM loss padding ('valid' or 'same')")
    parser.add_argument("--eval-only", action="store_true", help="score the checkpoints of an existing run")
    args = parser.parse_args()
    config_paths = args.config or [
        REPO / "configs" / "model" / "ssim_ae.yaml",
        REPO / "configs" / "data" / f"{args.dataset}.yaml",
    ]
    missing = [str(path) for path in config_paths if not path.is_file()]
    if missing:
        raise SystemExit(f"no such config: {', '.join(missing)} (pass --config MODEL.yaml DATA.yaml)")
    config = load_config(config_paths)
    config["data"]["init_args"]["category"] = args.dataset
    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    overrides["seed"] = args.seed
    precision = auto_precision() if args.precision == "auto" else args.precision
    overrides["train_precision"] = precision  # the model autocasts itself; the trainer stays in fp32
    shown = "+".join(str(path.relative_to(REPO) if path.is_absolute() else path) for path in config_paths)
    settings = " ".join(
        [shown, precision, *args.set, *([f"loss_padding={args.loss_padding}"] if args.loss_padding else [])]
    )
    name = args.name or "_".join([config_paths[0].stem, *args.set, precision, f"seed{args.seed}"])
    folder = REPO / "results" / "convergence" / args.dataset / name.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    # the end of training is always a point: a 150,000-crop run once kept 10k-100k only (POINTS has no 150k)
    points = sorted({p for p in (args.points or POINTS) if p <= args.crops} | {args.crops})
    if not args.eval_only:
        if any(folder.glob("crops_*.pt")):
            raise SystemExit(f"{folder} already holds checkpoints: use --eval-only or another --name")
        model, datamodule = build(config, overrides, args.data_root)
        if args.loss_padding:
            model.loss.padding = args.loss_padding
        batch_size = model.hparams.batch_size
        engine = Engine(
            max_steps=-(-args.crops // batch_size),
            max_epochs=-1,
            precision="32-true",
            logger=False,
            limit_val_batches=0,
            default_root_dir=str(folder),
            callbacks=[CropCheckpoints(points, folder)],
        )
        engine.fit(model, datamodule=datamodule)
    stamp = {
        "date": date.today().isoformat(),
        "commit": commit(),
        "machine": describe(),
        "dataset": args.dataset,
        "run": name,
        "seed": args.seed,
    }
    for checkpoint in sorted(folder.glob("crops_*.pt")):
        report = folder / f"{checkpoint.stem}.json"
        if report.exists():
            continue
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model, size = load_model(checkpoint)
        result = evaluate(model, Path(args.data_root) / args.dataset, size)
        result |= {"crops": state["crops"], "fit_seconds": state["fit_seconds"], "settings": settings}
        report.write_text(json.dumps(result, indent=1))
        write_rows(stamp, result)
        print(
            f"{checkpoint.name}: val_loss {result['val_loss']:.4f} "
            f"pixel AUROC {result['model']['pixel_AUROC']:.3f} AUPRO {result['model']['pixel_AUPRO']:.3f} "
            f"border {result['model']['border_ratio']:.2f}",
            flush=True,
        )


def append(path: Path, rows: list[dict]) -> None:
    """Append rows to a CSV, writing the header for a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        if new_file:
            writer.writeheader()
        writer.writerows(rows)


def write_rows(stamp: dict, result: dict) -> None:
    """One checkpoint's rows: convergence.csv (the model's own map), image_scores.csv and border.csv (all maps)."""
    seconds = result["fit_seconds"]  # not measured (< 0 or NaN): left empty
    base = stamp | {
        "crops": result["crops"],
        "fit_s": round(seconds) if math.isfinite(seconds) and seconds >= 0 else "",
    }
    own = result["model"]
    append(
        CSV,
        [
            base
            | {
                "val_loss": round(result["val_loss"], 5),
                "pixel_AUROC": round(own["pixel_AUROC"], 4),
                "pixel_AUPRO": round(own["pixel_AUPRO"], 4),
                "image_AUROC": round(own["image_AUROC"][own["score"]], 4),
                "score": own["score"],
                "border_ratio": round(own["border_ratio"], 3),
                "settings": result["settings"],
            }
        ],
    )
    variants = [k for k, v in result.items() if isinstance(v, dict) and "image_AUROC" in v]
    append(
        CSV.parent / "image_scores.csv",
        [
            base | {"residual": variant, "score": score, "image_AUROC": round(value, 4)}
            for variant in variants
            for score, value in result[variant]["image_AUROC"].items()
        ],
    )
    append(
        CSV.parent / "border.csv",
        [
            base
            | {
                "residual": variant,
                "border_ratio": round(result[variant]["border_ratio"], 4),
                "pixel_AUROC": round(result[variant]["pixel_AUROC"], 4),
                "pixel_AUPRO": round(result[variant]["pixel_AUPRO"], 4),
                "profile": " ".join(f"{v:.4f}" for v in result[variant]["border_profile"]),
            }
            for variant in variants
        ],
    )


if __name__ == "__main__":
    main()
