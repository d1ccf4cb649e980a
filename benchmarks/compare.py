"""Our four variants against anomalib's own models, dataset by dataset, seed by seed.

    python benchmarks/compare.py run --grid small            # 4 models x 2 datasets x 1 seed, ~30 min on 2 cores
    python benchmarks/compare.py run --grid full             # 10 models x 6 datasets x 3 seeds, ~16 h on 2 cores
    python benchmarks/compare.py run --grid full --tier long # 20-minute training budget, ~47 h on 2 cores
    python benchmarks/compare.py run --grid small --tier 600s # a budget of your own, in seconds (cells/600s/)
    python benchmarks/compare.py run --grid full --match-steps # on another machine: the wall-clock cells' steps
    python benchmarks/compare.py report                      # CSV, Markdown, plots, README section

Each cell (model, dataset, seed, tier) runs in its own process and writes one JSON file under
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
  ``max_steps`` instead of ``max_time`` (:func:`reference_steps`). A wall-clock cell that reached fewer than
  :data:`STARVED` of the steps of its best sibling on the same machine lost its budget to something else on the
  CPU: the report leaves it out of the means and lists it, and ``--rerun-starved`` reruns it (the old record and
  log kept as ``seed<N>.json.starved`` and ``seed<N>.log.starved``). A cell with no other seed on its machine is
  judged against its twin's (the denoising and the plain variant train the same network: :data:`TWINS`); a model
  whose wall-clock cells were all starved takes its twin's steps. A cell that finished but was found collapsed
  afterwards (by a collapse guard that missed it at the time) is marked by hand as failed, with ``collapsed`` saying
  what was seen; it keeps its step count as a reference (:func:`collapsed_cells`);
- each record says the precision it trained in (``precision``: our variants pick bf16 only on CPUs with bf16 units);
- no pretrained weights can be downloaded here: ImageNet backbones run with ``pre_trained: false`` (labelled) unless
  ``--hf-cache DIR`` points to a Hugging Face cache that holds timm's weights of the backbone (resnet18:
  ``timm/resnet18.a1_in1k``); they are then loaded offline from it (:func:`use_hf_cache`), or the cell fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks/results/compare"  # the cells, tables and plots the README's section is generated from
OURS = ("ssim_ae", "ssim_ae_extended", "ssim_dae", "ssim_dae_extended")
# anomalib models: init args (resnet18 everywhere, as in the offline reference runs), batch size, training?
PEERS = {
    "Padim": ({"backbone": "resnet18"}, 32, False),
    "Patchcore": ({"backbone": "resnet18", "coreset_sampling_ratio": 0.01}, 32, False),
    "Dfm": ({"backbone": "resnet18"}, 32, False),
    "Fastflow": ({"backbone": "resnet18"}, 8, True),
    "ReverseDistillation": ({"backbone": "resnet18"}, 8, True),
    "Cflow": ({"backbone": "resnet18"}, 8, True),
}
NOT_RUN = {
    "Stfpm": "its teacher is hard-coded pre_trained=True: it downloads ImageNet weights",
    "Uflow": "hard-coded pretrained CaiT/timm backbone: it downloads weights",
    "Csflow": "hard-coded torchvision EfficientNet-B5 ImageNet weights: it downloads weights",
    "EfficientAd": "needs ImageNet (imagenette) images and a pretrained teacher",
    "Draem": "about 7 s per training image and 1.7 s per test image at 256 x 256 on 2 cores: untrained in any tier",
    "Ganomaly": "image-level only, and its stock test scores depend on batch order",
}
DATASETS = (
    "mvtec_ad_grid_mini",
    "hazelnut_toy",
    "magnetic_tile",
    "bsdata_pitting",
    "mvtec3d_tire",
    "deeppcb",
)
GRIDS = {
    "small": {
        "models": ("ssim_ae", "Padim", "Patchcore", "Fastflow"),
        "datasets": ("mvtec_ad_grid_mini", "bsdata_pitting"),
        "seeds": (42,),
    },
    "full": {"models": (*OURS, *PEERS), "datasets": DATASETS, "seeds": (42, 43, 44)},
}
TIERS = {"short": 300, "long": 1200}  # seconds of training for models that train
PATCHCORE_MAX_TRAIN = 100
STARVED = 0.75  # share of the best sibling's steps below which a wall-clock cell was starved (seen: <= 0.50 vs >= 0.87)
# A denoising variant trains its plain twin's network on masked crops (Rádli & Czúni 2021, Eq. 3): a step costs the
# same, and the twins' 300-s step counts differ by 0.80-1.12x on every dataset: a yardstick where a seed has no other.
TWINS = {"ssim_dae": "ssim_ae", "ssim_dae_extended": "ssim_ae_extended"}
TWINS |= {plain: denoising for denoising, plain in TWINS.items()}
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's load_state_dict_from_hf tries, in order


def tier_arg(value: str) -> str:
    """``short``, ``long``, or a budget of your own in seconds (``60`` or ``60s``), whose cells go to ``cells/60s``."""
    if value in TIERS:
        return value
    seconds = value.removesuffix("s")
    if not seconds.isdigit() or int(seconds) == 0:
        raise argparse.ArgumentTypeError(f"{value!r}: short, long, or a number of seconds such as 600s")
    return f"{int(seconds)}s"


def dataset_arg(value: str) -> str:
    """A dataset: one folder name under ``--data-root`` (it names the cells' folder too)."""
    if not value or Path(value).name != value or value.startswith("."):
        raise argparse.ArgumentTypeError(f"{value!r}: a folder name under --data-root, such as mvtec_ad_grid_mini")
    return value


def budget(tier: str) -> int:
    """Seconds of training of a tier (``short``: 300, ``long``: 1200, ``60s``: 60)."""
    return TIERS[tier] if tier in TIERS else int(tier.removesuffix("s"))


def trains(model: str) -> bool:
    """Whether a model has a training budget (ours and Fastflow, ReverseDistillation, Cflow), not one pass."""
    return model in OURS or PEERS.get(model, ({}, 0, False))[2]  # an unknown model folder: no budget known


def cell_path(out: Path, tier: str, dataset: str, model: str, seed: int, pretrained: bool = False) -> Path:
    """Pretrained cells in their own folder: a run with ``--hf-cache`` neither skips nor replaces from-scratch cells."""
    return out / "cells" / tier / dataset / (f"{model}-pretrained" if pretrained else model) / f"seed{seed}.json"


def cell_tier(model: str, tier: str) -> str:
    """The tier a cell is run and stored under: the one-pass models (PaDiM, PatchCore, DFM) have no training budget,
    so their short-tier cell serves every tier (a long-tier grid neither reruns nor duplicates them)."""
    return "short" if model in PEERS and not trains(model) else tier


def write_json(path: Path, record: dict) -> None:
    """Atomic: a cell interrupted while writing leaves no half file that would count as finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def provenance() -> dict[str, str]:
    """Where a cell ran, stored in its record: date, machine (CPU, cores, flags, torch), code commit, versions.

    Training budgets are wall time: another machine's cells are comparable only when run with ``--match-steps``,
    and the report lists where every cell ran."""
    import datetime

    from machine import code_commit, describe, versions

    return {"date": datetime.date.today().isoformat(), "machine": describe(), "commit": code_commit(),
            "versions": versions()}  # fmt: skip


def read_cell(path: Path) -> dict:
    """A cell's record; one that cannot be read (cut short, edited by hand) is a failed cell that names its file."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not {"model", "dataset", "seed", "status"} <= record.keys():
            raise ValueError("not a cell record: model, dataset, seed or status missing")
        if not all(isinstance(record[key], str) for key in ("model", "dataset")) or type(record["seed"]) is not int:
            raise ValueError("not a cell record: model and dataset must be text, seed a whole number")
        if not isinstance(record.get("budget", {}), dict) or type(record.get("steps", 0)) is not int:
            raise ValueError("not a cell record: budget must be a mapping, steps a whole number")
        # A copied or renamed record would count one run twice and shrink the spread, or mix tiers.
        model = record["model"] + ("-pretrained" if record.get("pretrained") else "")
        said = f"{record.get('tier', path.parts[-4])}/{record['dataset']}/{model}/seed{record['seed']}.json"
        if path.parts[-4:] != tuple(said.split("/")):
            raise ValueError(f"it holds the record of {said}: copied or renamed? Not counted")
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        *_, dataset, model, _ = path.parts
        seed = path.stem.removeprefix("seed")
        record = {"model": model.removesuffix("-pretrained"), "dataset": dataset,
                  "seed": int(seed) if seed.isdigit() else seed, "pretrained": model.endswith("-pretrained"),
                  "status": "failed", "error": f"unreadable cell record {path}: {error}"}  # fmt: skip
    return record


def step_budget(record: dict) -> int | None:
    """The ``max_steps`` a cell trained under (``--match-steps``), or None for a wall-clock cell (old records too)."""
    return (record.get("budget") or {}).get("max_steps")


def wall_clock(records: list[dict]) -> list[dict]:
    """The finished wall-clock cells among ``records`` that counted their steps."""
    return [r for r in records if r["status"] == "ok" and step_budget(r) is None and r.get("steps") is not None]


def wall_clock_cells(folder: Path) -> list[dict]:
    """The finished wall-clock cells of one model on one dataset and tier (``cells/<tier>/<dataset>/<model>``)."""
    return wall_clock([read_cell(p) for p in sorted(folder.glob("seed*.json"))])


def collapsed_cells(folder: Path) -> list[dict]:
    """Wall-clock cells of ``folder`` that ran their whole budget but were found collapsed after the run (status
    failed, ``collapsed`` says what was seen; also once ``--rerun-failed`` set them aside as ``.failed``): no result,
    but their step count is still what the budget bought on their machine."""
    records = [read_cell(p) for p in sorted(folder.glob("seed*.json"))]
    for path in sorted(folder.glob("seed*.json.failed*")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return [r for r in records if r.get("collapsed") and step_budget(r) is None and type(r.get("steps")) is int]


def twin_folder(folder: Path) -> Path | None:
    """The cell folder of the same dataset and tier of ``folder``'s twin (:data:`TWINS`), or None."""
    return folder.with_name(TWINS[folder.name]) if folder.name in TWINS else None


def siblings(folder: Path) -> list[dict]:
    """The wall-clock cells a cell of ``folder`` is judged against by :func:`starved`: its model's and its twin's
    (:data:`TWINS`) on the same dataset and tier."""
    twin = twin_folder(folder)
    return wall_clock_cells(folder) + (wall_clock_cells(twin) if twin else [])


def reference_steps(folder: Path) -> dict | None:
    """The step budget ``--match-steps`` gives a cell of ``folder``: the most optimiser steps a wall-clock cell
    reached on the machine that ran most of them (ties: the lowest seed's), since on one machine sharing the CPU
    only lowers a count; and where that count came from. A model whose wall-clock cells were all starved (those
    that ``--rerun-starved`` kept as ``seed<N>.json.starved`` too) takes its twin's count (:data:`TWINS`; named in
    ``steps_from``). Where the only wall-clock cells were found collapsed after the run, theirs
    (:func:`collapsed_cells`). None if there is no such cell."""
    cells, source = wall_clock_cells(folder), ""
    twin = twin_folder(folder)
    if twin and (cells or any(folder.glob("seed*.json.starved*"))):
        twin_cells = wall_clock_cells(twin)
        if all(starved(r, cells + twin_cells) for r in cells):
            cells, source = twin_cells, f"{twin.name} "
    cells = cells or collapsed_cells(folder)
    if not cells:
        return None
    machine = Counter(r.get("machine") for r in cells).most_common(1)[0][0]
    best = max((r for r in cells if r.get("machine") == machine), key=lambda r: r["steps"])
    where = best.get("machine") or "machine not recorded"
    return {"max_steps": best["steps"],
            "steps_from": f"{source}seed {best['seed']}, {best.get('train_s', '?')} s on {where}"}  # fmt: skip


def starved(record: dict, siblings: list[dict]) -> bool:
    """A wall-clock cell that trained fewer than :data:`STARVED` of the steps of its best sibling on the same machine
    (same model, dataset and tier): its budget went to something else on the CPU, so it does not measure the model at
    that budget. Another CPU's count is no yardstick: it runs at another speed. A cell with no other seed of its
    model on its machine is judged against its twin's (:data:`TWINS`, which ``siblings`` may hold): the twins' counts
    differ by up to 1.12x, the seeds' of one model by up to 13%, so the twin is the yardstick only where there is
    no closer one."""
    if not wall_clock([record]):
        return False
    here = [s for s in wall_clock(siblings) if s.get("machine") == record.get("machine")]
    own = [s for s in here if s["model"] == record["model"]]
    alone = all(s["seed"] == record["seed"] for s in own)
    return record["steps"] < STARVED * max((s["steps"] for s in (here if alone else own)), default=0)


def use_hf_cache(cache: Path, backbones: Iterable[str]) -> dict[str, Path]:
    """Make timm load pretrained backbones from the Hugging Face cache ``cache``, offline.

    anomalib's models call ``timm.create_model(backbone, pretrained=True, pretrained_cfg=None)``, which loads the
    backbone's default tag from the hub (resnet18: ``timm/resnet18.a1_in1k``) through ``hf_hub_download``, that is
    ``<cache>/models--timm--resnet18.a1_in1k/snapshots/<refs/main>/model.safetensors`` (or ``pytorch_model.bin``).
    huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when imported, so this runs before anything
    imports it. Each backbone's weights are looked up here: offline, timm's own error for a missing file names neither
    the repository nor the cache. Returns backbone -> the cached weights file; raises if one is missing.
    """
    if "huggingface_hub" in sys.modules:
        msg = "use_hf_cache must run before huggingface_hub is imported: it reads HF_HUB_CACHE and HF_HUB_OFFLINE then"
        raise RuntimeError(msg)
    cache = cache.expanduser().resolve()
    if not cache.is_dir():
        raise FileNotFoundError(f"--hf-cache {cache}: {'not a folder' if cache.exists() else 'no such folder'}")
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")  # never the network, never another cache
    os.environ.pop("TIMM_USE_OLD_CACHE", None)  # it would make timm prefer torch.hub's cache to the hub's
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    found = {}
    for backbone in backbones:
        cfg = get_pretrained_cfg(backbone)
        if cfg is None or not cfg.hf_hub_id:
            raise ValueError(f"timm has no Hugging Face weights for backbone {backbone!r}")
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
        paths = [try_to_load_from_cache(cfg.hf_hub_id, name, cache_dir=cache) for name in names]
        path = next((Path(p) for p in paths if isinstance(p, str)), None)  # not None nor the "known absent" marker
        if path is None:
            folder = "models--" + cfg.hf_hub_id.replace("/", "--")
            raise FileNotFoundError(
                f"--hf-cache {cache} lacks timm's weights of {backbone}: {cfg.hf_hub_id} "
                f"({folder}/snapshots/<hash in refs/main>/{' or '.join(names)})"
            )
        found[backbone] = path
    return found


# ---------------------------------------------------------------------------------------------------- one cell
def _our_model(name: str, dataset: str, seed: int, post_processor, evaluator):
    """The variant with the init args of its two configs (model first, then dataset), as ``anomalib train`` would."""
    import importlib

    import yaml

    model_cfg = yaml.safe_load((REPO / "configs/model" / f"{name}.yaml").read_text())["model"]
    data_cfg = yaml.safe_load((REPO / "configs/data" / f"{dataset}.yaml").read_text())
    init = {**model_cfg["init_args"], **data_cfg["model"]["init_args"], "seed": seed}
    module, _, cls = model_cfg["class_path"].rpartition(".")
    model_class = getattr(importlib.import_module(module), cls)
    model = model_class(**init, post_processor=post_processor, evaluator=evaluator, visualizer=False)
    return model, data_cfg["data"]["init_args"]["train_batch_size"], data_cfg["data"]["init_args"]["eval_batch_size"]


def check_masks(folder: Path) -> None:
    """Every defective test image needs its mask, ``ground_truth/<defect>/<stem>[_mask].<ext>``: without one,
    anomalib's MVTecAD fails in pandas ("Must have equal len keys and value") without naming a file."""
    from anomalib.data.datasets.image.mvtecad import IMG_EXTENSIONS  # what MVTecAD reads: .png

    for image in sorted((folder / "test").glob("*/*")):
        if image.parent.name == "good" or image.suffix not in IMG_EXTENSIONS:
            continue
        masks = folder / "ground_truth" / image.parent.name
        if not any((masks / f"{image.stem}{tail}{ext}").is_file() for tail in ("", "_mask") for ext in IMG_EXTENSIONS):
            msg = f"{image}: no mask in {masks} ({image.stem}.png or {image.stem}_mask.png); pixel metrics need one"
            raise FileNotFoundError(msg)


def check_split(datamodule, folder: Path) -> None:
    """Fail before training, not after the budget: the metrics need good and defective test images and masks."""
    if len(datamodule.train_data) == 0:
        raise ValueError(f"{folder / 'train' / 'good'}: no training images")
    labels = frozenset(datamodule.test_data.samples.label_index.tolist())
    if labels != {0, 1}:
        have = {frozenset(): "no", frozenset({0}): "only good", frozenset({1}): "only defective"}[labels]
        msg = f"{folder / 'test'}: {have} test images; image and pixel AUROC need both good and defective ones"
        raise ValueError(msg)


def run_cell(
    model_name: str, dataset: str, seed: int, tier: str, data_root: Path, pretrained: bool, steps: dict | None = None
) -> dict:
    """Train and test one cell in this process; returns its record (metrics, times, memory, per-image scores).

    ``steps`` (from :func:`reference_steps`) replaces the wall-clock cap of a model that trains by ``max_steps``."""
    import torch
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max
    from anomalib.post_processing import PostProcessor
    from lightning.pytorch import Callback, seed_everything
    from lightning.pytorch.trainer.states import TrainerFn

    torch.set_num_threads(os.cpu_count() or 1)
    seed_everything(seed, workers=True)
    evaluator = Evaluator(
        test_metrics=[
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Max(fields=["pred_score", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False, fpr_limit=0.3),
        ]
    )
    post = PostProcessor(enable_normalization=False, enable_thresholding=False)
    ours = model_name in OURS
    if ours:
        model, batch, eval_batch = _our_model(model_name, dataset, seed, post, evaluator)
        training = True
    else:
        import anomalib.models

        init, batch, training = PEERS[model_name]
        model = getattr(anomalib.models, model_name)(
            **init, pre_trained=pretrained, post_processor=post, evaluator=evaluator, visualizer=False
        )
        eval_batch = 32
    paper = None
    if ours:
        from anomalib_ssimae.metrics import _PaperProtocolAUROC  # tensor inputs: the residual is not a batch field
        from anomalib_ssimae.models.ssim_ae.anomaly_map import residual_map

        paper = _PaperProtocolAUROC()
    scores: list[float] = []
    labels: list[int] = []
    test_time = [0.0, 0]

    class Collect(Callback):
        """Per-image raw scores (ROC curves), test-step time, and the paper's metric on the SSIM residual."""

        def on_test_batch_start(self, *args, **kwargs) -> None:
            self.start = time.perf_counter()

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args, **kwargs) -> None:
            test_time[0] += time.perf_counter() - self.start
            test_time[1] += len(outputs.image)
            scores.extend(outputs.pred_score.flatten().float().tolist())
            labels.extend(outputs.gt_label.flatten().int().tolist())
            if paper is not None:
                inputs = pl_module.model.prepare(outputs.image)
                paper.update(residual_map(inputs, outputs.reconstruction), outputs.gt_mask)

    check_masks(data_root / dataset)
    datamodule = MVTecAD(
        root=data_root,
        category=dataset,
        train_batch_size=batch,
        eval_batch_size=eval_batch,
        num_workers=2,
        seed=seed,
    )
    datamodule.setup(TrainerFn.FITTING)
    check_split(datamodule, data_root / dataset)
    n_train = len(datamodule.train_data)
    if model_name == "Patchcore" and n_train > PATCHCORE_MAX_TRAIN:
        keep = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:PATCHCORE_MAX_TRAIN]
        datamodule.train_data = datamodule.train_data.subsample(sorted(keep.tolist()))
    engine = Engine(
        callbacks=[Collect(), ModelCheckpoint(save_top_k=0)],  # no checkpoint files
        logger=False,
        default_root_dir=os.environ.get("COMPARE_WORKDIR", "/tmp/compare"),
        accelerator="cpu",
        devices=1,
        max_epochs=1000 if training else 1,
        max_steps=steps["max_steps"] if training and steps else -1,
        max_time={"seconds": budget(tier)} if training and not steps else None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_wall = time.perf_counter() - start
    record = {
        "model": model_name,
        "dataset": dataset,
        "seed": seed,
        "tier": tier,
        "status": "ok",
        "pretrained": pretrained and not ours,
        "data_root": str(data_root.resolve()),
        "train_images": len(datamodule.train_data),
        "test_images": test_time[1],
        "epochs": model.trainer.current_epoch,
        "steps": model.trainer.global_step,
        "budget": ({**steps} if steps else {"max_time_s": budget(tier)}) if training else {"one_pass": True},
        "train_s": round(train_s, 1),
        "test_wall_s": round(test_wall, 1),
        "test_ms_per_image": round(1000 * test_time[0] / max(test_time[1], 1), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "precision": "bf16-mixed" if getattr(model, "_bf16", False) else str(model.trainer.precision),
        **{key: round(float(value), 4) for key, value in results.items()},
        "scores": scores,
        "labels": labels,
    }
    if paper is not None:
        fpr, tpr = paper.curve()
        record |= {
            "paper_AUROC": round(float(paper.compute()), 4),
            "paper_fpr": fpr.tolist(),
            "paper_tpr": tpr.tolist(),
        }
    return record


# ---------------------------------------------------------------------------------------------------- the grid
def run_child(command: list[str], log, timeout: float) -> int | str:
    """Run a cell's process; if this runner is stopped (SIGTERM, Ctrl-C) or the cell overruns, the cell goes too, so
    a restarted grid never trains a second copy of it beside the first."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run_grid(args: argparse.Namespace) -> int:
    grid = GRIDS[args.grid]
    models = args.models or grid["models"]
    datasets = args.datasets or grid["datasets"]
    seeds = args.seeds or grid["seeds"]
    missing = [d for d in datasets if not (args.data_root / d).is_dir()]
    if missing:  # one clear error, not a failed process per cell
        print(f"--data-root {args.data_root} lacks {', '.join(missing)} (MVTec AD layout: <root>/<dataset>/train/good)")
        return 2
    configs = [REPO / "configs/data" / f"{d}.yaml" for d in datasets]
    unconfigured = [str(c.relative_to(REPO)) for c in configs if not c.is_file()] if set(models) & set(OURS) else []
    if unconfigured:  # our variants take image size, channels and loss from the dataset's config
        print(f"our variants need a data config per dataset: {', '.join(unconfigured)} missing (copy one of "
              "configs/data/*.yaml and set image_size, in_channels and category)")  # fmt: skip
        return 2
    cells = [(d, m, s) for d in datasets for m in models for s in seeds]
    if args.match_steps:  # one clear error before anything runs, not a failed cell per seed
        paths = [cell_path(args.out, args.tier, d, m, s, bool(args.hf_cache) and m in PEERS)
                 for d, m, s in cells if trains(m)]  # fmt: skip
        records = {p: read_cell(p) for p in paths if p.exists()}
        unfinished = {p.parent for p in paths if p not in records or records[p]["status"] != "ok"
                      or (args.rerun_starved and starved(records[p], siblings(p.parent)))}  # fmt: skip
        lacking = sorted(str(f.relative_to(args.out / "cells" / args.tier)) for f in unfinished
                         if reference_steps(f) is None)  # fmt: skip
        if lacking:
            print(f"--match-steps: no wall-clock cell in {args.out / 'cells' / args.tier} to take the steps from for "
                  f"{', '.join(lacking)}; run those without --match-steps first")  # fmt: skip
            return 2
    failed = []
    for index, (dataset, model, seed) in enumerate(cells, 1):
        pretrained = bool(args.hf_cache) and model in PEERS
        tier = cell_tier(model, args.tier)
        path = cell_path(args.out, tier, dataset, model, seed, pretrained)
        name = (f"{model} (pretrained)" if pretrained else model) + (f" ({tier} tier)" if tier != args.tier else "")
        if path.exists():
            record = read_cell(path)
            stale = args.rerun_starved and starved(record, siblings(path.parent))
            if not stale and (record["status"] == "ok" or not args.rerun_failed):
                elsewhere = record.get("data_root") not in (None, str(args.data_root.resolve()))
                note = f" (it ran on {record['data_root']}: another --out for other data)" if elsewhere else ""
                print(
                    f"[{index}/{len(cells)}] {dataset} {name} seed {seed}: {record['status']}, kept{note}", flush=True
                )
                if record["status"] != "ok":
                    failed.append(f"{dataset} {name} seed {seed}: {record.get('error', '?')} (kept; --rerun-failed)")
                continue
            how = f"starved ({record['steps']} steps)" if stale else record["status"]
            kept = set_aside(path, "starved" if stale else "failed")
            print(f"[{index}/{len(cells)}] {dataset} {name} seed {seed}: {how}, kept as {kept.name}", flush=True)
        print(f"[{index}/{len(cells)}] {dataset} {name} seed {seed} ...", flush=True)
        log = path.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "cell", model, dataset, str(seed), tier]
        command += ["--data-root", str(args.data_root), "--out", str(args.out)]
        command += ["--hf-cache", str(args.hf_cache)] if args.hf_cache else []
        matched = args.match_steps and trains(model)
        command += ["--match-steps"] if matched else []
        limit = budget(tier) * (4 if matched else 1) + 1800  # a slower machine takes longer for the same steps
        start = time.time()
        with log.open("w") as handle:
            code = run_child(command, handle, limit)
        if not path.exists():  # the cell died before writing its record
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            last = next(
                (line for line in reversed(tail) if "Error" in line or "error" in line), tail[-1] if tail else ""
            )
            if code == "timeout":
                how = f"timed out after {limit} s"
            else:
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            error = f"{how}; log {log}: {last.strip() or 'no output'}"
            write_json(path, {"model": model, "dataset": dataset, "seed": seed, "tier": tier,
                              "pretrained": pretrained, "status": "failed", "error": error, "exit_code": code,
                              "log": log.name, **provenance()})  # fmt: skip
            failed.append(f"{dataset} {name} seed {seed}: {error}")
        record = read_cell(path)
        if record["status"] != "ok" and not any(line.startswith(f"{dataset} {name} seed {seed}:") for line in failed):
            failed.append(f"{dataset} {name} seed {seed}: {record['error']}")
        print(f"    {record['status']} in {time.time() - start:.0f} s", flush=True)
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0


def set_aside(path: Path, label: str) -> Path:
    """Move a cell's record (and its log) to ``seed<N>.json.<label>`` (``.<label>-2`` ... if taken), a name the report
    does not read, so that a rerun never overwrites them. Returns the record's new path."""
    tails = (f".{label}", *(f".{label}-{i}" for i in range(2, 99)))
    tail = next(t for t in tails if not path.with_name(path.name + t).exists())
    kept = path.with_name(path.name + tail)
    path.replace(kept)
    if path.with_suffix(".log").exists():
        path.with_suffix(".log").replace(path.with_name(f"{path.stem}.log{tail}"))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a grid; finished cells are kept")
    run.add_argument("--grid", choices=GRIDS, default="small",
                     help="small: SSIM-AE, PaDiM, PatchCore, FastFlow on two datasets, seed 42 (8 cells, ~30 min on "
                     "2 cores); full: every model, dataset and seeds 42-44 (180 cells, ~16 h) "
                     "(default: %(default)s)")  # fmt: skip
    run.add_argument("--tier", type=tier_arg, default="short", help=tier_arg.__doc__)
    run.add_argument("--models", nargs="+", choices=(*OURS, *PEERS))
    run.add_argument("--datasets", nargs="+", metavar="DATASET", type=dataset_arg,
                     help="folders under --data-root in MVTec AD layout (default: the grid's); our variants "
                     "need configs/data/<DATASET>.yaml")  # fmt: skip
    run.add_argument("--seeds", nargs="+", type=int, help="(default: the grid's)")
    run.add_argument(
        "--rerun-failed",
        action="store_true",
        help="run failed cells again; the old record and log are kept as seed<N>.json.failed and seed<N>.log.failed",
    )
    run.add_argument("--rerun-starved", action="store_true",
                     help=f"rerun wall-clock cells that trained fewer than {STARVED:.0%}% of their best sibling's "
                     "steps on the same machine (the CPU was shared); the old record and log are kept as "
                     "seed<N>.json.starved and seed<N>.log.starved")  # fmt: skip
    cell = sub.add_parser("cell", help="one cell in this process (used by run)")
    cell.add_argument("model", choices=(*OURS, *PEERS))
    cell.add_argument("dataset", type=dataset_arg)
    cell.add_argument("seed", type=int)
    cell.add_argument("tier", type=tier_arg)
    report = sub.add_parser("report", help="CSV, Markdown table, plots and README section from the cells")
    report.add_argument("--tier", type=tier_arg, default="short",
                        help="the tier whose cells to report: short, long or a budget of seconds such as 600s "
                        "(default: %(default)s)")  # fmt: skip
    report.add_argument(
        "--readme",
        type=Path,
        help="README whose comparison section is replaced (default: the repository's, for the "
        "short tier of the default --out; none otherwise)",
    )
    for p in (run, cell, report):
        p.add_argument(
            "--out", type=Path, default=OUT, help="folder of the cells and the report (default: %(default)s)"
        )
    for p in (run, cell):
        p.add_argument("--match-steps", action="store_true",
                       help="train for the optimiser steps of the same model's wall-clock cells (dataset, tier; its "
                       "twin's if all of them were starved) instead of for the tier's seconds: for cells run on "
                       "another machine")  # fmt: skip
        p.add_argument(
            "--data-root",
            type=Path,
            default=REPO.parent / "shared/datasets",
            help="folder holding the datasets, <root>/<dataset>/train/good etc. (default: %(default)s)",
        )
        p.add_argument(
            "--hf-cache",
            type=Path,
            help="Hugging Face hub cache holding timm's weights of the backbone (resnet18: timm/resnet18.a1_in1k): "
            "pretrained backbones, loaded offline",
        )
    args = parser.parse_args(argv)
    if args.command == "report":
        from compare_report import report as write_report

        default = args.out.resolve() == OUT.resolve() and args.tier == "short"
        return write_report(args.out, args.tier, args.readme or (REPO / "README.md" if default else None))
    if args.command == "run":
        return run_grid(args)
    pretrained = bool(args.hf_cache) and args.model in PEERS
    args.tier = cell_tier(args.model, args.tier)  # one-pass models: the short tier's cell serves every tier
    path = cell_path(args.out, args.tier, args.dataset, args.model, args.seed, pretrained)
    origin = {}
    try:
        weights = use_hf_cache(args.hf_cache, {PEERS[args.model][0]["backbone"]}) if pretrained else {}
        origin = provenance()  # after use_hf_cache (it imports huggingface_hub), before training: fails at once
        steps = reference_steps(path.parent) if args.match_steps and trains(args.model) else None
        if args.match_steps and trains(args.model) and steps is None:
            raise ValueError(f"--match-steps: no wall-clock cell in {path.parent} to take the steps from")
        record = run_cell(args.model, args.dataset, args.seed, args.tier, args.data_root, pretrained, steps)
        if weights:  # the snapshot the backbone came from: models--timm--resnet18.a1_in1k/snapshots/<hash>/<file>
            record["weights"] = [str(p.relative_to(args.hf_cache.expanduser().resolve())) for p in weights.values()]
        record |= origin
    except Exception as error:  # noqa: BLE001 - every failure becomes a row with its error
        traceback.print_exc()
        record = {"model": args.model, "dataset": args.dataset, "seed": args.seed, "tier": args.tier,
                  "pretrained": pretrained, "status": "failed", "error": f"{type(error).__name__}: {error}",
                  **origin}  # fmt: skip
    write_json(path, record)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
