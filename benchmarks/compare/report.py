"""Tables, plots and the READMEs' sections from the cells of the comparison (``run.py``, ``job.py``).

    python benchmarks/compare/report.py [--tier short] [--out DIR] [--readme FILE] [--summary FILE]

Writes, for a tier, under ``--out``:

- ``<tier>.csv``: one row per cell (failed cells included, with their error), after one ``#`` line of provenance
  (``pandas.read_csv(path, skiprows=1)``);
- ``<tier>.md``: mean ± standard deviation over seeds per model and dataset, failures, models not run, published
  numbers of pretrained peers (a separate table, never mixed with measurements);
- ``<tier>_<metric>.png``: a bar chart with error bars per metric; ``<tier>_roc.png``: image ROC curves of our variants;
  ``<tier>_time_vs_pixel_auroc.png``: training time against pixel AUROC;

and replaces two marked sections, so that no number there is typed: the comparison table between
``<!-- compare:begin -->`` and ``<!-- compare:end -->`` (``--readme``; by default ``benchmarks/compare/README.md``) and
the compact wins-and-losses table between ``<!-- compare-summary:begin -->`` and ``<!-- compare-summary:end -->``
(``--summary``; by default the repository's ``README.md``). The defaults apply to the short tier of the default
``--out`` only. Every file is stamped with the machine, date, package versions and commit.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.compare.cells import (
    GRIDS,
    NOT_RUN,
    OURS,
    OUT,
    PATCHCORE_MAX_TRAIN,
    REPO,
    STARVED,
    add_out_option,
    budget,
    cell_tier,
    read_cell,
    starved,
    step_budget,
    tier_arg,
    trains,
    twin_folder,
)

METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Max", "paper_AUROC")
COLUMNS = ("model", "dataset", "seed", "tier", "status", "pretrained", "epochs", "steps", "train_images",
           "test_images", *METRICS, "train_s", "test_wall_s", "test_ms_per_image", "peak_rss_mb", "parameters",
           "budget", "precision", "starved", "error", "date", "commit", "machine", "versions")  # fmt: skip
TIMES = ("train_s", "test_ms_per_image")  # machine-bound: summarised over the main machine's cells only
CAVEATS = {
    "mvtec_ad_grid_mini": "14 test images (3 good): image AUROC moves by 0.1-0.2 between seeds",
    "hazelnut_toy": (
        "colour defects: every model that trains reaches image AUROC 1.0 (a smoke test). SSIM-AEe and SSIM-DAEe "
        "collapsed here at steps 347-420 at the peak learning rate of 1e-3, in bf16 and in fp32 (failed cells, "
        "listed below); only SSIM-AEe seed 43 trained (fp32)"
    ),
    "magnetic_tile": "ROI crops of many sizes, resized; the same tile under different lighting",
    "bsdata_pitting": "defect frames are later and dirtier than the good ones: image AUROC is inflated",
    "mvtec3d_tire": "a part on a plain background; every model's image AUROC is near chance here",
    "deeppcb": "masks are filled boxes, which caps the pixel metrics",
}
# anomalib 2.7's model READMEs: ImageNet-pretrained, full MVTec AD categories (not our subsets), image / pixel AUROC
PUBLISHED = {
    ("Padim", "ResNet-18"): {"grid": (0.857, 0.918), "hazelnut": (0.750, 0.978)},
    ("Patchcore", "ResNet-18"): {"grid": (0.947, 0.955), "hazelnut": (1.000, 0.986)},
    ("Dfm", "ResNet-18"): {"grid": (0.736, None), "hazelnut": (0.994, None)},
    ("Fastflow", "ResNet-18"): {"grid": (0.988, 0.985), "hazelnut": (0.846, 0.953)},
    ("ReverseDistillation", "Wide ResNet-50"): {"grid": (1.000, 0.992), "hazelnut": (1.000, 0.988)},
    ("Cflow", "Wide ResNet-50"): {"grid": (0.962, 0.968), "hazelnut": (1.000, 0.990)},
}
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- compare-summary:begin -->", "<!-- compare-summary:end -->"
README = REPO / "benchmarks" / "compare" / "README.md"  # the comparison table, for the default --out's short tier
SUMMARY = REPO / "README.md"  # the compact wins-and-losses table, likewise
PATCHCORE_NOTE = (
    f"PatchCore builds its memory bank from at most {PATCHCORE_MAX_TRAIN} training images per seed (drawn at random; "
    "its coreset search over all of them takes too long on 2 cores): the CSV's train_images says how many."
)
MARGIN_METRICS = (("pixel AUROC", "pixel_AUROC"), ("AUPRO", "pixel_AUPRO"), ("image AUROC", "image_AUROC"))
MARGIN_NOTE = (
    "Where our variants win and lose: the best of ours against the best from-scratch peer, means over seeds; "
    '"win" or "loss" only where the gap exceeds the two standard deviations together, "(1 seed)" where '
    "either side has no spread to judge by."
)


def stamp() -> str:
    """Where the report was made; :func:`origins` says where its cells ran."""
    from benchmarks.machine import code_commit, describe, versions  # torch: imported when a report is written

    return f"{datetime.date.today()} · {describe()} · {versions()} · commit {code_commit() or '?'}"


def main_machine(cells: list[dict]) -> str | None:
    """The machine most finished cells of models that train ran on (of all finished cells if none train; ties: the
    first cell's): the times in the tables are its, since another CPU runs at another speed."""
    ok = [c for c in cells if c["status"] == "ok" and c.get("machine")]
    machines = Counter(c["machine"] for c in [c for c in ok if trains(c["model"])] or ok)
    return machines.most_common(1)[0][0] if machines else None


def cpu(machine: str) -> str:
    """A machine's CPU, cores and flags (``AMD EPYC · 2 cores · flags ['avx2']``): two EPYCs differ by their flags."""
    return " · ".join(machine.split(" · ")[:3])


def budget_text(cell: dict) -> str:
    """``300 s`` (wall clock), ``3789 steps`` (``--match-steps``) or ``one pass``, for the CSV; older records have no
    ``budget``: theirs was the tier's."""
    if cell["status"] != "ok":
        return ""
    said = cell.get("budget") or {}
    if step_budget(cell) is not None:
        return f"{step_budget(cell)} steps"
    if "max_time_s" in said or (trains(cell["model"]) and not said):
        return f"{said.get('max_time_s', budget(cell['tier']))} s"
    return "one pass"


def precision(cell: dict) -> str:
    """The precision of a record that predates the ``precision`` field: anomalib's models train in fp32; ours in
    bf16 autocast where the CPU has bf16 units (``train_precision: auto``: AVX512-BF16 or AMX; fp32 elsewhere)."""
    if cell["status"] != "ok":
        return ""
    flags = cell.get("machine") or ""
    return "bf16-mixed" if cell["model"] in OURS and ("avx512_bf16" in flags or "amx" in flags) else "32-true"


def origins(cells: list[dict], commits: bool = True) -> str:
    """Where the cells ran (from their records): machines with their cell counts, dates, the code commits.

    Wall-clock budgets buy different steps on different CPUs, so the text warns when wall-clock cells of models that
    train ran on more than one machine, and names the cells that trained for a step count instead."""
    machines = Counter(c.get("machine") or "machine not recorded" for c in cells)
    text = "Cells ran on " + "; ".join(f"{m} ({n} cell{'s' * (n > 1)})" for m, n in machines.most_common())
    dates = sorted({c["date"] for c in cells if c.get("date")})
    text += f", {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") if dates else ""
    found = sorted({c["commit"] for c in cells if c.get("commit")})
    if found:
        text += f", at commits {', '.join(found)}" if commits else f", at {len(found)} commit(s) (listed in the CSV)"
    text += "."
    ok = [c for c in cells if c["status"] == "ok" and trains(c["model"])]
    wall = {c["machine"] for c in ok if c.get("machine") and step_budget(c) is None}
    if len(wall) > 1:
        text += " Warning: models that train ran on more than one machine, and their budget is wall time."
    matched = [c for c in ok if step_budget(c) is not None]
    if matched:
        where = Counter(cpu(c.get("machine") or "machine not recorded") for c in matched).most_common()
        text += (f" {len(matched)} cell(s) of models that train ran for the optimiser steps of the same model's "
                 "wall-clock cells (or, where those were all starved, its twin's: `--match-steps`), not for the "
                 f"seconds: {'; '.join(f'{n} on {m}' for m, n in where)}.")  # fmt: skip
    by = Counter(c.get("precision") or precision(c) for c in ok if c["model"] in OURS)
    if len(by) > 1:
        counts = ", ".join(f"{n} cell{'s' * (n > 1)} {p}" for p, n in sorted(by.items()))
        text += (" Our variants trained in bf16 autocast on CPUs with bf16 units and in fp32 elsewhere (`precision` "
                 f"in the CSV): {counts}.")  # fmt: skip
    main = main_machine(cells)
    if main and any(c.get("machine") != main for c in cells if c["status"] == "ok"):
        text += f" Train and test times are those of the {cpu(main)} cells."
    return text


def load_cells(out: Path, tier: str) -> list[dict]:
    """The cells' records; ``label`` is the model, marked when its backbone was pretrained (never mixed).

    The one-pass models' cells are the short tier's in every tier (:func:`cells.cell_tier`)."""
    paths = [p for folder in dict.fromkeys((tier, "short"))
             for p in sorted((out / "cells" / folder).glob("*/*/seed*.json"))
             if cell_tier(p.parent.name.removesuffix("-pretrained"), tier) == folder]  # fmt: skip
    cells = [read_cell(p) for p in paths]
    folders = defaultdict(list)
    for path, cell in zip(paths, cells, strict=True):
        folders[path.parent].append(cell)
    for path, cell in zip(paths, cells, strict=True):
        cell["label"] = cell["model"] + (" (pretrained)" if cell.get("pretrained") else "")
        twin = folders.get(twin_folder(path.parent), [])  # the folders' records, read once above
        cell["starved"] = starved(cell, folders[path.parent] + twin)  # left out of the means, listed
        cell["budget_text"] = budget_text(cell)  # the CSV's budget column
        cell.setdefault("precision", precision(cell))
    return cells


def earlier_failures(out: Path, tier: str) -> list[dict]:
    """Failed records that ``--rerun-failed`` set aside (``seed<N>.json.failed``) before rerunning the cell: listed,
    so a failure that a rerun (perhaps on another machine) replaced is not forgotten. An unreadable one is named."""
    found = []
    for folder in dict.fromkeys((tier, "short")):
        for path in sorted((out / "cells" / folder).glob("*/*/seed*.json.failed*")):
            if cell_tier(path.parent.name.removesuffix("-pretrained"), tier) != folder:
                continue
            try:
                record = json.loads(path.read_text())
                where = (record.get("machine") or "machine not recorded").split(" · ")[0]
                text = f"{record.get('error', '?')} ({where}, {record.get('date', 'no date')})"
            except (OSError, ValueError) as error:
                text = f"unreadable: {error}"
            seed = path.name.split(".")[0].removeprefix("seed")
            found.append(f"- {path.parent.parent.name} / {path.parent.name} / seed {seed} ({path.name}): {text}")
    return found


def f1max_floor(cells: list[dict], dataset: str) -> float | None:
    """Image F1Max of calling every test image defective, 2p / (1 + p): no model can score below it."""
    labels = next((c["labels"] for c in cells if c["dataset"] == dataset and c.get("labels")), None)
    if not labels:
        return None
    share = sum(labels) / len(labels)
    return 2 * share / (1 + share)


def summarise(cells: list[dict]) -> dict[tuple[str, str], dict[str, tuple[float, float, int]]]:
    """(model, dataset) -> metric -> (mean, sample standard deviation or 0 for one seed, seeds).

    Finished cells only, starved ones left out; the times (:data:`TIMES`) only from :func:`main_machine`'s cells."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for cell in cells:
        if cell["status"] == "ok" and not cell.get("starved"):
            groups[cell["label"], cell["dataset"]].append(cell)
    main = main_machine(cells)
    summary = {}
    for key, runs in groups.items():
        summary[key] = {}
        for metric in (*METRICS, "train_s", "steps", "test_ms_per_image", "peak_rss_mb", "parameters"):
            timed = [run for run in runs if metric not in TIMES or main is None or run.get("machine") == main]
            values = [run[metric] for run in timed if run.get(metric) is not None and not math.isnan(run[metric])]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                summary[key][metric] = (statistics.fmean(values), spread, len(values))
    return summary


def cell_text(entry: tuple[float, float, int] | None, digits: int = 3) -> str:
    if entry is None:
        return "–"
    mean, spread, n = entry
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def order(cells: list[dict]) -> tuple[list[str], list[str]]:
    models = list(dict.fromkeys(c["label"] for c in sorted(cells, key=lambda c: (c["model"] not in OURS, c["label"]))))
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    return models, datasets


def markdown(cells: list[dict], tier: str, earlier: list[str] = ()) -> str:
    summary = summarise(cells)
    models, datasets = order(cells)
    lines = [f"# Comparison, {tier} tier ({budget(tier)} s of training for models that train)", "",
             f"Report: {stamp()}. {origins(cells)}", ""]  # fmt: skip
    if tier != "short":
        lines += [
            "The one-pass models (PaDiM, PatchCore, DFM) have no training budget: their rows are the short tier's.",
            "",
        ]
    ok = [c for c in cells if c["status"] == "ok"]
    hours = sum(c.get("train_s", 0) + c.get("test_wall_s", 0) for c in ok) / 3600
    lines += [f"{len(ok)} cells: {hours:.1f} h of training and testing (process start-up not counted).", ""]
    lines += [("Mean ± standard deviation over seeds (seeds in brackets; one seed: no spread); raw scores, every "
               "test image. ImageNet backbones `pre_trained: false` unless marked (pretrained). Our variants run at "
               "their data config's image size, anomalib's models at 256 x 256; pixel metrics at each model's size. "
               f"{PATCHCORE_NOTE} Train s and ms/image come from the main machine's cells only."),
              ""]  # fmt: skip
    for dataset in datasets:
        floor = f1max_floor(cells, dataset)
        floor_text = f" Image F1Max of calling every image defective: {floor:.3f}." if floor is not None else ""
        lines += [f"## {dataset}", "", f"Caveat: {CAVEATS.get(dataset, '')}.{floor_text}", ""]
        lines += [("| model | image AUROC | pixel AUROC | AUPRO | image F1Max | paper AUROC | train s | steps | "
                  "ms/image | peak RSS MB | parameters |"), "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for model in models:
            entry = summary.get((model, dataset))
            if entry is None:
                continue
            n = entry["image_AUROC"][2] if "image_AUROC" in entry else 0
            row = [f"{model} ({n})", *(cell_text(entry.get(m)) for m in METRICS)]
            row += [cell_text(entry.get(m), 0) for m in ("train_s", "steps", "test_ms_per_image", "peak_rss_mb")]
            row.append(f"{entry['parameters'][0] / 1e6:.2f} M" if "parameters" in entry else "–")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Wins and losses", "", MARGIN_NOTE, "", *margins(cells), ""]
    hungry = [c for c in cells if c.get("starved")]
    if hungry:
        lines += ["## Starved cells, left out of the means", "",
                  (f"Wall-clock cells that trained fewer than {STARVED:.0%} of the steps of their best seed on the "
                   "same machine (of their denoising twin's, for a cell with no other seed there; the CPU was shared "
                   "while they ran); `run.py --rerun-starved` reruns them."), ""]  # fmt: skip
        lines += [f"- {c['dataset']} / {c['label']} / seed {c['seed']}: {c['steps']} steps in {c['train_s']} s"
                  for c in hungry]  # fmt: skip
        lines.append("")
    failures = [c for c in cells if c["status"] != "ok"]
    lines += ["## Failures", ""]
    lines += [f"- {c['dataset']} / {c['label']} / seed {c['seed']}: {c.get('error', '?')}" for c in failures] or [
        "none"
    ]
    if earlier:
        lines += ["", "## Failed, then rerun", "", ("Records that `--rerun-failed` kept aside as `seed<N>.json.failed` "
                  "(with their logs) before the cell ran again:"), "", *earlier]  # fmt: skip
    undefined = [f"- {c['dataset']} / {c['label']} / seed {c['seed']}: {metric}" for c in cells for metric in METRICS
                 if isinstance(c.get(metric), float) and math.isnan(c[metric])]  # fmt: skip
    if undefined:
        lines += ["", "## Undefined metrics (NaN), left out of the means and spreads", "", *undefined]
    lines += ["", "## Not run", ""] + [f"- {model}: {why}" for model, why in NOT_RUN.items()]
    lines += ["", "## Published, ImageNet-pretrained, full MVTec AD categories (not measured here)", "",
              "From anomalib 2.7's model READMEs; our grid and hazelnut sets are small subsets at other sizes.", "",
              "| model | backbone | grid image / pixel AUROC | hazelnut image / pixel AUROC |", "|---|---|---|---|"]  # fmt: skip
    for (model, backbone), values in PUBLISHED.items():
        pairs = [" / ".join("–" if v is None else f"{v:.3f}" for v in values[c]) for c in ("grid", "hazelnut")]
        lines.append(f"| {model} | {backbone} | {pairs[0]} | {pairs[1]} |")
    return "\n".join(lines) + "\n"


def best_against_peers(cells: list[dict]) -> dict[str, dict[str, dict | None]]:
    """Per dataset and metric: the best of our variants against the best from-scratch peer (means over seeds), or
    None where either side has no value.

    The verdict is "win" or "loss" when the gap exceeds the sum of the two standard deviations, "within spread" when
    it does not, and "(1 seed)" marks a gap with no spread to judge it by. Pretrained peers are left out: they saw
    ImageNet, ours did not.
    """
    summary = summarise(cells)
    models, datasets = order(cells)
    peers = [m for m in models if m not in OURS and "(pretrained)" not in m]
    found: dict[str, dict[str, dict | None]] = {}
    for dataset in datasets:
        found[dataset] = {}
        for _, metric in MARGIN_METRICS:
            best = {}
            for side, names in (("ours", OURS), ("peer", peers)):
                entries = [(summary[m, dataset][metric], m) for m in names if metric in summary.get((m, dataset), {})]
                # equal shown means: the one measured over more seeds (a 1-seed tie is no verdict)
                best[side] = max(entries, default=None, key=lambda e: (round(e[0][0], 3), e[0][2]))
            if best["ours"] is None or best["peer"] is None:
                found[dataset][metric] = None
                continue
            (ours, ours_sd, ours_n), ours_name = best["ours"]
            (peer, peer_sd, peer_n), peer_name = best["peer"]
            gap = ours - peer
            if min(ours_n, peer_n) < 2:
                verdict = "(1 seed)"
            else:
                verdict = "within spread" if abs(gap) <= ours_sd + peer_sd else "win" if gap > 0 else "loss"
            shown = round(gap, 3) + 0.0  # + 0.0: "+0.000", never "-0.000"
            found[dataset][metric] = {"ours": ours_name, "ours_mean": ours, "peer": peer_name, "peer_mean": peer,
                                      "gap": shown, "verdict": verdict}  # fmt: skip
    return found


def margins(cells: list[dict]) -> list[str]:
    """The wins-and-losses table (:func:`best_against_peers`), one row per dataset."""
    lines = ["| dataset | " + " | ".join(f"{name}: best of ours vs best peer" for name, _ in MARGIN_METRICS) + " |",
             "|---|" + "---|" * len(MARGIN_METRICS)]  # fmt: skip
    for dataset, entries in best_against_peers(cells).items():
        row = [dataset]
        for _, metric in MARGIN_METRICS:
            e = entries[metric]
            row.append("–" if e is None else f"{e['ours']} {e['ours_mean']:.3f} vs {e['peer']} {e['peer_mean']:.3f}: "
                       f"{e['gap']:+.3f} {e['verdict']}")  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return lines


def command_flags(out: Path, tier: str) -> tuple[str, str]:
    """Where ``out`` is (relative to the repository when inside it) and the report's flags that name it and ``tier``."""
    resolved = out.resolve()
    where = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved
    out_flag = f" --out {where}" if resolved != OUT.resolve() else ""
    return str(where), (f" --tier {tier}" if tier != "short" else "") + out_flag


def summary_section(cells: list[dict], tier: str, out: Path = OUT, readme: Path = README, here: Path = SUMMARY) -> str:
    """The compact wins-and-losses table for the repository's README (``here``), linking to ``readme``'s full table."""
    where, flags = command_flags(out, tier)
    ok = [c for c in cells if c["status"] == "ok" and not c.get("pretrained") and not c.get("starved")]
    seeds = sorted({c["seed"] for c in ok})
    dates = sorted({c["date"] for c in cells if c.get("date")})
    when = f", {dates[0]} to {dates[-1]}" if len(dates) > 1 else f", {dates[0]}" if dates else ""
    link = Path(os.path.relpath(readme.resolve(), here.resolve().parent)).as_posix()
    lines = [SUMMARY_BEGIN, (f"Generated by `python benchmarks/compare/report.py{flags}` from the {len(cells)} cell "
             f"records in `{where}/cells/` ({tier} tier: {budget(tier)} s of training{when}). Best of our four "
             "variants against the best of anomalib's models trained from scratch, means over seeds "
             f"{', '.join(map(str, seeds))}; win or loss only where the gap exceeds the two standard deviations "
             "together, \"1 seed\" where either side has no spread to judge by. Every model, failures and caveats: "
             f"[the comparison]({link})."), "",
             "| dataset | " + " | ".join(name for name, _ in MARGIN_METRICS) + " |",
             "|---|" + "---|" * len(MARGIN_METRICS)]  # fmt: skip
    for dataset, entries in best_against_peers(cells).items():
        row = [dataset]
        for _, metric in MARGIN_METRICS:
            e = entries[metric]
            if e is None:
                row.append("–")
                continue
            word = {"win": "**win**", "loss": "**loss**", "(1 seed)": "1 seed"}.get(e["verdict"], e["verdict"])
            row.append(f"{word} {e['ours_mean']:.3f} vs {e['peer_mean']:.3f} ({e['peer']})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, SUMMARY_END])


def readme_section(cells: list[dict], tier: str, out: Path = OUT, earlier: list[str] = ()) -> str:
    """The comparison table of every model and dataset; it names the files and the command that made it."""
    where, flags = command_flags(out, tier)
    out_flag = f" --out {where}" if out.resolve() != OUT.resolve() else ""
    command = "python benchmarks/compare/report.py" + flags
    summary = summarise(cells)
    models, datasets = order(cells)
    pretrained = any(c.get("pretrained") for c in cells)
    lines = [BEGIN, (f"Generated by `{command}` from `{where}/{tier}.csv` "
             f"({budget(tier)} s of training for the models that train, one pass for PaDiM, PatchCore and DFM; report "
             f"{stamp()}). {origins(cells, commits=False)} Pixel AUROC / image AUROC, mean ± sd over the seeds in "
             "the second-to-last column; anomalib's models with `pre_trained: false`"
             f"{' unless marked pretrained' if pretrained else ''}, as nothing can be downloaded here. Our variants "
             f"at their data config's image size, anomalib's at 256 x 256. {PATCHCORE_NOTE}"), ""]  # fmt: skip
    lines += ["| dataset | " + " | ".join(models) + " | seeds | caveat |", "|---|" + "---|" * (len(models) + 2)]
    for dataset in datasets:
        row = [dataset]
        seeds = sorted({c["seed"] for c in cells if c["dataset"] == dataset and c["status"] == "ok"
                        and not c.get("pretrained") and not c.get("starved")})  # fmt: skip
        for model in models:
            entry = summary.get((model, dataset), {})
            pixel, image = entry.get("pixel_AUROC"), entry.get("image_AUROC")
            failures = sum(c["label"] == model and c["dataset"] == dataset and c["status"] != "ok" for c in cells)
            text = f"{cell_text(pixel, 2)} / {cell_text(image, 2)}" if entry else "failed" if failures else "–"
            n = image[2] if image else len(seeds)
            said = [f"{n} seed{'s' * (n > 1)}"] if n < len(seeds) else []  # fewer seeds than others
            said += [f"{failures} failed"] if failures and entry else []  # the mean is of the seeds that trained
            row.append(text + (f" ({', '.join(said)})" if said else ""))
        lines.append("| " + " | ".join([*row, ", ".join(map(str, seeds)), CAVEATS.get(dataset, "")]) + " |")
    failed = sum(c["status"] != "ok" for c in cells)
    hungry = sum(bool(c.get("starved")) for c in cells)
    full = GRIDS["full"]
    done = {(c["model"], c["dataset"], c["seed"]) for c in cells
            if c["status"] == "ok" and not c.get("pretrained") and not c.get("starved")}  # fmt: skip
    total = len(full["models"]) * len(full["datasets"]) * len(full["seeds"])
    grid = {(m, d, s) for m in full["models"] for d in full["datasets"] for s in full["seeds"]}
    ran = len(grid & done)
    lost = len(
        grid
        & {(c["model"], c["dataset"], c["seed"]) for c in cells if c["status"] != "ok" and not c.get("pretrained")}
        - done
    )
    starved_text = f"{hungry} starved cell(s) (`--rerun-starved`) and " if hungry else ""
    rerun = f" and {len(earlier)} earlier failure(s) since rerun" if earlier else ""
    run = f"`python benchmarks/compare/run.py --grid full --tier {tier}{out_flag}`"
    left = f"; {total - ran - lost} have not run ({run} runs them)" if total - ran - lost else ""
    note = (
        f"{starved_text}{failed} failed cell(s){rerun}, listed in `{where}/{tier}.md` with their errors. "
        f"–: not run yet (or every cell starved). Of the full grid's {total} cells, {ran} have finished and "
        f"{lost} failed{left}" + (f"; {run[:-1]} --rerun-failed` runs the failed ones again." if lost else ".")
    )
    lines += ["", MARGIN_NOTE, "", *margins(cells), "", note, END]
    return "\n".join(lines)


def plots(cells: list[dict], out: Path, tier: str) -> list[Path]:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    summary = summarise(cells)
    models, datasets = order(cells)
    written = []
    for metric in METRICS:  # paper AUROC: our variants only (it scores the 1 - SSIM residual)
        shown = [m for m in models if any(summary.get((m, d), {}).get(metric) for d in datasets)]
        if not shown:  # no cell has it (paper AUROC without our variants): no empty chart, nor a stale one
            (out / f"{tier}_{metric}.png").unlink(missing_ok=True)
            continue
        fig, ax = plt.subplots(figsize=(3.4 + 1.3 * len(datasets), 4))
        width = 0.8 / max(len(shown), 1)
        for i, model in enumerate(shown):  # a model without this metric (peers: paper AUROC) gets no legend entry
            entries = [summary.get((model, d), {}).get(metric) for d in datasets]
            xs = [j + i * width for j, e in enumerate(entries) if e]
            ax.bar(xs, [e[0] for e in entries if e], width, yerr=[e[1] for e in entries if e], label=model, capsize=2)
        for j, dataset in enumerate(datasets * (metric == "image_F1Max")):  # most models sit near this floor
            floor = f1max_floor(cells, dataset)
            if floor is not None:
                ax.hlines(floor, j - width, j + 0.8, colors="black", linestyles="dashed", lw=0.8,
                          label="calling every image defective" if j == 0 else None)  # fmt: skip
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets, rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}, {tier} tier ({budget(tier)} s), mean ± sd over seeds", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
        fig.text(0.01, 0.01, stamp(), fontsize=5)
        written.append(out / f"{tier}_{metric}.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    fig, axes = plt.subplots(1, len(datasets), figsize=(3 * len(datasets), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for model in models:
            runs = [c for c in cells if c["dataset"] == dataset and c["label"] == model and c["status"] == "ok"]
            runs = [c for c in runs if model in OURS and len(set(c["labels"])) == 2 and not c.get("starved")]
            if runs:
                first = min(runs, key=lambda c: c["seed"])
                fpr, tpr, _ = roc_curve(first["labels"], first["scores"])
                ax.plot(fpr, tpr, label=f"{model} ({first['image_AUROC']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set_title(dataset, fontsize=8)
        ax.set_xlabel("FPR")
        if ax.get_legend_handles_labels()[0]:  # a dataset with no variant of ours yet has no curve
            ax.legend(fontsize=6)
    axes[0][0].set_ylabel("TPR (image level, first seed)")
    fig.text(0.01, 0.01, stamp(), fontsize=5)
    written.append(out / f"{tier}_roc.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    main = main_machine(cells)
    for model in models:
        points = [(c["train_s"], c["pixel_AUROC"]) for c in cells
                  if c["label"] == model and c["status"] == "ok" and c.get("pixel_AUROC") is not None
                  and (main is None or c.get("machine") == main) and not c.get("starved")]  # fmt: skip
        if points:
            ax.scatter(*zip(*points, strict=True), label=model, s=18, marker="o" if model in OURS else "^")
    ax.set_xlabel("training wall time, s")
    ax.set_ylabel("pixel AUROC")
    ax.set_title(f"every cell on the main machine, {tier} tier", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.text(0.01, 0.01, stamp(), fontsize=5)
    written.append(out / f"{tier}_time_vs_pixel_auroc.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def update_readme(readme: Path, section: str, markers: tuple[str, str] = (BEGIN, END)) -> bool:
    """Replace the one section of ``readme`` marked by ``markers`` (atomically); anything else is left alone, with a
    note why."""
    first, last = markers
    text = readme.read_text() if readme.is_file() else ""
    begin, end = text.find(first), text.find(last)
    if text.count(first) != 1 or text.count(last) != 1 or end < begin:
        print(f"{readme}: not updated: it needs one {first} line followed by one {last} line")
        return False
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(text[:begin] + section + text[end + len(last) :])
    tmp.replace(readme)
    return True


def report(out: Path, tier: str, readme: Path | None, summary: Path | None = None) -> int:
    """The CSV, the Markdown table and the plots under ``out``; the comparison table into ``readme`` and the compact
    wins-and-losses table into ``summary`` (each skipped when None). 1 when a section could not be written."""
    cells = load_cells(out, tier)
    if not cells:
        print(f"no cells under {out / 'cells' / tier}: run `python benchmarks/compare/run.py` first")
        return 1
    with (out / f"{tier}.csv").open("w", newline="") as handle:
        handle.write(f"# {stamp()}\n")
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**c, "budget": c["budget_text"]} for c in cells)
    earlier = earlier_failures(out, tier)
    (out / f"{tier}.md").write_text(markdown(cells, tier, earlier))
    written = plots(cells, out, tier)
    updated = readme is None or update_readme(readme, readme_section(cells, tier, out, earlier))
    if summary is not None:
        section = summary_section(cells, tier, out, readme or README, summary)
        updated = update_readme(summary, section, (SUMMARY_BEGIN, SUMMARY_END)) and updated
    print(f"{len(cells)} cells -> {out / f'{tier}.csv'}, {out / f'{tier}.md'}, {len(written)} plots")
    return 0 if updated else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", type=tier_arg, default="short",
                        help="the tier whose cells to report: short, long or a budget of seconds such as 600s "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--readme",
        type=Path,
        help="Markdown file whose comparison section (compare:begin/end) is replaced (default: "
        "benchmarks/compare/README.md, for the short tier of the default --out; none otherwise)",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        help="Markdown file whose compact wins-and-losses section (compare-summary:begin/end) is replaced (default: "
        "the repository's README.md, for the short tier of the default --out; none otherwise)",
    )
    add_out_option(parser)
    args = parser.parse_args(argv)
    default = args.out.resolve() == OUT.resolve() and args.tier == "short"
    readme = args.readme or (README if default else None)
    return report(args.out, args.tier, readme, args.summary or (SUMMARY if default else None))


if __name__ == "__main__":
    sys.exit(main())
