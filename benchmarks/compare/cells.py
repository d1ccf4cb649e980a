"""The comparison's grid and its cell store: which models, datasets, seeds and tiers make up a grid (the generator),
and the JSON records the cells leave under ``--out/cells/<tier>/<dataset>/<model>/seed<seed>.json``.

Imported by the job (``job.py``, one cell), the runner (``runner.py``, a grid) and the report (``report.py``); it imports
none of them. A record is read back by its path and content only (:func:`read_cell`), so committed records stay
readable whatever code wrote them. Which cells were starved of their budget (:func:`starved`) and how many optimiser
steps ``--match-steps`` replays (:func:`reference_steps`) are decided here, from the records.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "benchmarks/results/compare"  # the cells, tables and plots the READMEs' sections are generated from
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

    from benchmarks.machine import code_commit, describe, versions

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


def add_out_option(parser: argparse.ArgumentParser) -> None:
    """``--out``, the folder of the cells and the report: the same for the runner, the job and the report."""
    parser.add_argument(
        "--out", type=Path, default=OUT, help="folder of the cells and the report (default: %(default)s)"
    )


def add_cell_options(parser: argparse.ArgumentParser) -> None:
    """The options a grid (``run.py``) passes on to each of its cells (``job.py``)."""
    add_out_option(parser)
    parser.add_argument("--match-steps", action="store_true",
                        help="train for the optimiser steps of the same model's wall-clock cells (dataset, tier; its "
                        "twin's if all of them were starved) instead of for the tier's seconds: for cells run on "
                        "another machine")  # fmt: skip
    parser.add_argument(
        "--data-root",
        type=Path,
        default=REPO.parent / "shared/datasets",
        help="folder holding the datasets, <root>/<dataset>/train/good etc. (default: %(default)s)",
    )
    parser.add_argument(
        "--hf-cache",
        type=Path,
        help="Hugging Face hub cache holding timm's weights of the backbone (resnet18: timm/resnet18.a1_in1k): "
        "pretrained backbones, loaded offline",
    )
