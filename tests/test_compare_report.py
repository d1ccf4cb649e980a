"""The comparison report (``python benchmarks/compare/report.py``) on constructed cells: spreads over seeds, failures
listed with their errors, and the READMEs' sections regenerated from the cells, not typed."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from .benchmark_scripts import BEGIN, END, SUMMARY_BEGIN, SUMMARY_END, benchmark, call, write_cell

FULL_GRID = {  # the full grid of benchmarks/compare/cells.py: 10 models x 6 datasets x 3 seeds
    "models": ("ssim_ae", "ssim_ae_extended", "ssim_dae", "ssim_dae_extended", "Padim", "Patchcore", "Dfm",
               "Fastflow", "ReverseDistillation", "Cflow"),
    "datasets": ("mvtec_ad_grid_mini", "hazelnut_toy", "magnetic_tile", "bsdata_pitting", "mvtec3d_tire", "deeppcb"),
}  # fmt: skip


def cell(model: str, seed: int, image: float, pixel: float, **extra: object) -> dict:
    return {"model": model, "dataset": "mvtec_ad_grid_mini", "seed": seed, "tier": "short", "status": "ok",
            "pretrained": False, "image_AUROC": image, "pixel_AUROC": pixel, "pixel_AUPRO": 0.5, "image_F1Max": 0.9,
            "train_s": 180.0, "test_ms_per_image": 50.0, "peak_rss_mb": 1500, "parameters": 2_345_678,
            "scores": [0.1, 0.9, 0.8, 0.2], "labels": [0, 1, 1, 0], **extra}  # fmt: skip


def report(out: Path, *args: object) -> str:
    """``python benchmarks/compare/report.py --out OUT ARGS`` must succeed; returns its Markdown table."""
    result = benchmark("compare/report.py", "--out", out, *args)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    tier = args[args.index("--tier") + 1] if "--tier" in args else "short"
    return (out / f"{tier}.md").read_text()


def section_lines(text: str, header: str) -> list[str]:
    """The table of ``text`` whose first line starts with ``header``: header, rule and rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_report_from_cells(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    where = {"machine": "CPU A · 2 cores", "date": "2026-11-01", "commit": "abc1234"}
    write_cell(out, cell("ssim_ae", 42, 0.8, 0.90, **where))
    write_cell(out, cell("ssim_ae", 43, 0.9, 0.94, **where | {"date": "2026-11-02", "commit": "def5678+modified"}))
    write_cell(out, cell("Padim", 42, 0.576, 0.697, **where | {"machine": "CPU B · 2 cores"}))  # one pass: no warning
    write_cell(out, cell("Padim", 43, 0.9, 0.95, pretrained=True))  # never averaged with the from-scratch runs
    failure = {"model": "Cflow", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short", "status": "failed",
               "error": "RuntimeError: out of memory"}  # fmt: skip
    write_cell(out, failure)
    write_cell(out, {**failure, "model": "Patchcore", "pretrained": True, "error": "OSError: no weights"})
    readme, summary = tmp_path / "compare.md", tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nold numbers\n{END}\n\n## License\n")
    summary.write_text(f"# title\n\n{SUMMARY_BEGIN}\nold wins\n{SUMMARY_END}\n")

    table = report(out, "--readme", readme, "--summary", summary)

    rows = list(csv.DictReader(line for line in (out / "short.csv").open() if not line.startswith("#")))
    assert [(r["model"], r["seed"], r["status"], r["commit"]) for r in rows] == [
        ("Cflow", "42", "failed", ""), ("Padim", "42", "ok", "abc1234"), ("Padim", "43", "ok", ""),
        ("Patchcore", "42", "failed", ""), ("ssim_ae", "42", "ok", "abc1234"), ("ssim_ae", "43", "ok", "def5678+modified"),
    ]  # fmt: skip
    assert "| ssim_ae (2) | 0.850 ± 0.071 | 0.920 ± 0.028 |" in table  # mean ± sample sd of two seeds
    assert "| Padim (1) | 0.576 | 0.697 |" in table
    assert ("Cells ran on machine not recorded (3 cells); CPU A · 2 cores (2 cells); CPU B · 2 cores (1 cell), "
            "2026-11-01 to 2026-11-02, at commits abc1234, def5678+modified. Train and test times are those of the "
            "CPU A · 2 cores cells.\n") in table  # fmt: skip
    assert "4 cells: 0.2 h of training and testing" in table  # 4 x 180 s; the failed cell has no time
    assert table.count("| 1500 | 2.35 M |") == 2 and "| 1500 ± 0 | 2.35 M |" in table  # peak RSS MB, parameters
    assert "| Padim (pretrained) (1) | 0.900 | 0.950 |" in table
    assert "mvtec_ad_grid_mini / Cflow / seed 42: RuntimeError: out of memory" in table
    assert "mvtec_ad_grid_mini / Patchcore (pretrained) / seed 42: OSError: no weights" in table
    assert "every image defective: 0.667." in table  # F1Max floor: 2 of 4 images defective, 2p / (1 + p)
    text = readme.read_text()
    assert "old numbers" not in text
    assert text.startswith("# title\n\n" + BEGIN) and text.endswith(END + "\n\n## License\n")
    assert (
        "| mvtec_ad_grid_mini | 0.92 ± 0.03 / 0.85 ± 0.07 | failed | 0.70 / 0.58 (1 seed) | 0.95 / 0.90 (1 seed) "
        "| failed | 42, 43 |" in text
    )  # ours first; a model run on fewer seeds than the row's says so
    assert "| mvtec_ad_grid_mini | ssim_ae 0.920 vs Padim 0.697: +0.223 (1 seed) |" in text  # not the pretrained
    assert ("2026-11-01 to 2026-11-02, at 2 commit(s) (listed in the CSV). Train and test times are those of the CPU A "
            "· 2 cores cells. Pixel AUROC") in text  # fmt: skip
    assert "2 failed cell(s)" in text
    assert f"Generated by `python benchmarks/compare/report.py --out {out}` from `{out}/short.csv`" in text
    assert ("Of the full grid's 180 cells, 3 have finished and 1 failed; 176 have not run (`python "
            f"benchmarks/compare/run.py --grid full --tier short --out {out}` runs them)") in text  # fmt: skip
    # 10 models x 6 datasets x 3 seeds; the pretrained cells are not the grid's
    assert "PatchCore builds its memory bank from at most 100 training images per seed" in text
    assert not (out / "short_paper_AUROC.png").exists()  # no cell has the paper's metric: no empty chart
    names = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Max", "roc", "time_vs_pixel_auroc")
    for name in names:  # a bar chart per metric
        assert (out / f"short_{name}.png").stat().st_size > 10_000
    # the compact table for the repository's README: the wins and losses alone, linking to the comparison
    wins = summary.read_text()
    assert "old wins" not in wins and wins.endswith(SUMMARY_END + "\n")
    assert (f"Generated by `python benchmarks/compare/report.py --out {out}` from the 6 cell records in `{out}/cells/` "
            "(short tier: 300 s of training, 2026-11-01 to 2026-11-02).") in wins  # fmt: skip
    assert "[the comparison](compare.md)" in wins
    assert section_lines(wins, "| dataset | pixel AUROC | AUPRO | image AUROC |")[2] == (
        "| mvtec_ad_grid_mini | 1 seed 0.920 vs 0.697 (Padim) | 1 seed 0.500 vs 0.500 (Padim) "
        "| 1 seed 0.850 vs 0.576 (Padim) |"
    )


def test_margins_judge_gaps_by_spread() -> None:
    """Best of ours against the best from-scratch peer: a loss, a tie within spread and a win, on hand-set values."""
    cells = [
        cell("ssim_ae", 42, 0.8, 0.90), cell("ssim_ae", 43, 0.9, 0.94),  # pixel 0.92 ± 0.028, image 0.85 ± 0.071
        cell("ssim_dae", 42, 0.5, 0.80), cell("ssim_dae", 43, 0.5, 0.80),  # worse than ssim_ae: not the "best of ours"
        cell("Fastflow", 42, 0.6, 0.99), cell("Fastflow", 43, 0.6, 0.99),  # pixel 0.99 ± 0: gap -0.07 > 0.028
        cell("Padim", 42, 1.0, 1.0, pretrained=True),  # pretrained: left out
    ]  # fmt: skip
    for c in cells:
        c["label"] = c["model"] + (" (pretrained)" if c["pretrained"] else "")
    # equal means: the peer measured over more seeds is the yardstick, not the first by name (hazelnut_toy's image
    # AUROC was judged "(1 seed)" against CFlow's one cell while PaDiM had 1.000 ± 0.000 over three)
    ties = [cell("ssim_ae", s, 1.0, 0.9) for s in (42, 43)] + [cell("Cflow", 42, 1.0, 0.8)]
    ties += [cell("Padim", s, 1.0, 0.8) for s in (42, 43, 44)]
    for c in ties:
        c["label"] = c["model"]
    ((header, rule, row), tied), _ = call("compare.report", ("margins", cells), ("margins", ties))
    assert header.startswith("| dataset | pixel AUROC: best of ours vs best peer |") and rule.startswith("|---|")
    assert row == (
        "| mvtec_ad_grid_mini | ssim_ae 0.920 vs Fastflow 0.990: -0.070 loss "
        "| ssim_ae 0.500 vs Fastflow 0.500: +0.000 within spread | ssim_ae 0.850 vs Fastflow 0.600: +0.250 win |"
    )
    assert tied[2].endswith("| ssim_ae 1.000 vs Padim 1.000: +0.000 within spread |")


def test_origins_warn_when_training_ran_on_two_machines() -> None:
    """Training budgets are wall time: a faster machine trains more steps, so mixed machines must be visible."""
    cells = [cell("ssim_ae", 42, 0.8, 0.9, machine="A"), cell("Padim", 42, 0.6, 0.7, machine="B")]
    old = cell("ssim_dae", 42, 0.8, 0.9, date="2026-11-30")  # an old record: where it ran is not known
    fastflow = cell("Fastflow", 42, 0.6, 0.7, machine="B")
    (two, three, four), _ = call(
        "compare.report", ("origins", cells), ("origins", [*cells, old]), ("origins", [*cells, old, fastflow])
    )
    times = " Train and test times are those of the A cells."  # B's are left out of the time columns
    assert two == "Cells ran on A (1 cell); B (1 cell)." + times  # PaDiM makes one pass: no budget
    assert three == "Cells ran on A (1 cell); B (1 cell); machine not recorded (1 cell), 2026-11-30." + times
    assert four.endswith(
        " Warning: models that train ran on more than one machine, and their budget is wall time. Train and test "
        "times are those of the A cells."  # A and B ran one cell of a model that trains each: the first one's
    )


def test_readme_counts_failed_seeds_beside_the_mean() -> None:
    """A model whose seeds partly failed shows the mean of those that trained, and how many failed; a grid whose
    every cell ran says so rather than "have run" for the finished ones only."""
    cells = [cell(m, s, 0.9, 0.95 if m == "ssim_ae" else 0.9) for m in FULL_GRID["models"] for s in (42, 43, 44)]
    cells = [{**c, "dataset": d} for c in cells for d in FULL_GRID["datasets"]]
    for c in cells:
        c["label"] = c["model"]
        if c["model"] == "ssim_ae_extended" and c["seed"] > 42 and c["dataset"] == "mvtec_ad_grid_mini":
            c.update(status="failed", error="FloatingPointError: training collapsed")
    (text,), _ = call("compare.report", ("readme_section", cells, "short"))
    assert "| mvtec_ad_grid_mini | 0.95 ± 0.00 / 0.90 ± 0.00 | 0.90 / 0.90 (1 seed, 2 failed) |" in text
    assert ("Of the full grid's 180 cells, 178 have finished and 2 failed; `python benchmarks/compare/run.py --grid "
            "full --tier short --rerun-failed` runs the failed ones again.") in text  # fmt: skip


def test_origins_name_each_machine_of_step_matched_cells() -> None:
    """Step-matched cells ran on two CPUs that share a name (two EPYCs): each is named by its flags, with its count,
    and so is the machine whose times the tables show."""
    fast, slow, xeon = (f"AMD EPYC · 2 cores · flags {f} · torch 2.14.1" for f in ("['avx512f']", "['avx2']", "[]"))
    xeon = xeon.replace("AMD EPYC", "Xeon")
    steps = {"budget": {"max_steps": 900, "steps_from": "seed 42"}}
    cells = [cell("ssim_ae", 42, 0.8, 0.9, machine=fast), cell("Padim", 42, 0.6, 0.7, machine=slow),
             cell("ssim_dae", 42, 0.8, 0.9, machine=fast), cell("Cflow", 42, 0.6, 0.7, machine=fast),
             cell("ssim_ae", 43, 0.8, 0.9, machine=xeon, **steps), cell("Cflow", 43, 0.6, 0.7, machine=slow, **steps),
             cell("Cflow", 44, 0.6, 0.7, machine=slow, **steps)]  # fmt: skip
    (text,), _ = call("compare.report", ("origins", cells))
    assert text.endswith(
        "3 cell(s) of models that train ran for the optimiser steps of the same model's wall-clock cells (or, where "
        "those were all starved, its twin's: `--match-steps`), not for the seconds: 2 on AMD EPYC · 2 cores · flags "
        "['avx2']; 1 on Xeon · 2 cores · flags []. Train and test times are those of the AMD EPYC · 2 cores · flags "
        "['avx512f'] cells."
    )


def test_one_pass_models_serve_every_tier(tmp_path: Path) -> None:
    """A long-tier grid neither reruns PaDiM (no training budget) nor mixes short-tier training into its table."""
    out = tmp_path / "compare"
    write_cell(out, cell("Padim", 42, 0.576, 0.697))
    write_cell(out, cell("ssim_ae", 42, 0.8, 0.90))
    write_cell(out, cell("ssim_ae", 42, 0.9, 0.95, tier="long", train_s=1200.0))
    root = tmp_path / "data"  # not ../shared/datasets: the suite runs in a clone with nothing beside it
    (root / "mvtec_ad_grid_mini/train/good").mkdir(parents=True)
    args = ["--tier", "long", "--models", "Padim", "ssim_ae", "--datasets", "mvtec_ad_grid_mini", "--seeds", "42",
            "--data-root", str(root)]  # fmt: skip

    ran = benchmark("compare/run.py", *args, "--out", out)
    assert ran.returncode == 0, ran.stdout + ran.stderr  # both cells found: nothing runs
    assert not (out / "cells/long/mvtec_ad_grid_mini/Padim").exists()
    table = report(out, "--tier", "long")
    assert "| Padim (1) | 0.576 | 0.697 |" in table and "| ssim_ae (1) | 0.900 | 0.950 |" in table
    assert "| ssim_ae (1) | 0.800 |" not in table  # the short tier's training run stays in the short table
    assert "2 cells: 0.4 h" in table  # 1200 s + 180 s


def test_copied_records_and_undefined_metrics_are_not_counted(tmp_path: Path) -> None:
    """A copied record would count one run twice and shrink the spread; a NaN would turn the mean into NaN."""
    out = tmp_path / "compare"
    first = write_cell(out, cell("ssim_ae", 42, 0.8, 0.90))
    write_cell(out, cell("ssim_ae", 43, 0.9, 0.94, pixel_AUPRO=float("nan")))
    for copy in ("seed42 copy.json", "seed44.json"):
        (first.parent / copy).write_text(first.read_text())
    other_tier = out / "cells/600s/mvtec_ad_grid_mini/ssim_ae/seed42.json"
    other_tier.parent.mkdir(parents=True)
    other_tier.write_text(first.read_text())
    write_cell(out, cell("ssim_ae", "45", 0.8, 0.90))  # seed as text
    write_cell(out, cell("ssim_ae", 46, 0.8, 0.90, budget="300 s"))

    table = report(out)
    assert "| ssim_ae (2) | 0.850 ± 0.071 | 0.920 ± 0.028 | 0.500 |" in table  # AUPRO from seed 42 alone
    for copy in ("seed42 copy.json", "seed44.json"):
        assert (f"{first.parent / copy}: it holds the record of short/mvtec_ad_grid_mini/ssim_ae/seed42.json: copied or "
                "renamed? Not counted") in table  # fmt: skip
    assert f"{first.parent / 'seed45.json'}: not a cell record: model and dataset must be text, seed a whole" in table
    assert f"{first.parent / 'seed46.json'}: not a cell record: budget must be a mapping, steps a whole number" in table
    assert "it holds the record of short/mvtec_ad_grid_mini/ssim_ae/seed42.json" in report(out, "--tier", "600s")
    undefined = "## Undefined metrics (NaN), left out of the means and spreads\n\n"
    assert undefined + "- mvtec_ad_grid_mini / ssim_ae / seed 43: pixel_AUPRO\n" in table


def test_starved_and_step_matched_cells(tmp_path: Path) -> None:
    """A wall-clock cell that got a quarter of its siblings' steps (the CPU was shared) is listed, not averaged; a
    cell run on another machine for the reference's steps (``--match-steps``) is averaged, but not timed."""
    out = tmp_path / "compare"
    a = {"machine": "A · 2 cores"}
    cells = [
        cell("ssim_ae", 42, 0.5, 0.50, steps=1000, **a),  # starved: 1000 < 0.75 x 4000
        cell("ssim_ae", 43, 0.8, 0.90, steps=4000, **a),
        cell("ssim_ae", 44, 0.9, 0.94, steps=4000, train_s=90.0, test_ms_per_image=20.0, machine="X · 2 cores",
             budget={"max_steps": 4000, "steps_from": "seed 43, 180.0 s on A · 2 cores"}),
        cell("Fastflow", 42, 0.6, 0.80, steps=300, **a), cell("Fastflow", 43, 0.6, 0.82, steps=240, **a),  # 0.8: fed
    ]  # fmt: skip
    for record in cells:
        write_cell(out, record)
    folder = out / "cells/short/mvtec_ad_grid_mini/ssim_ae"
    (steps, no_steps, *judged), _ = call(
        "compare.cells",
        ("reference_steps", folder),
        ("reference_steps", out / "cells/short/mvtec_ad_grid_mini/Cflow"),
        *[("starved", c, cells[:3]) for c in cells[:3]],
        *[("starved", c, cells[3:]) for c in cells[3:]],
        ("starved", cell("Fastflow", 44, 0.6, 0.8, steps=0, **a), cells[3:]),
        ("starved", cell("Fastflow", 44, 0.6, 0.8, steps=100, machine="slow CPU"), cells[3:]),
    )
    assert steps == {"max_steps": 4000, "steps_from": "seed 43, 180.0 s on A · 2 cores"}
    assert no_steps is None
    assert judged[:3] == [True, False, False]  # a step-matched cell never is
    assert judged[3:5] == [False, False]
    assert judged[5]  # the worst starvation of all
    assert not judged[6]  # no yardstick on that machine

    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    table = report(out, "--readme", readme)
    assert "1 starved cell(s) (`--rerun-starved`) and 0 failed cell(s)" in readme.read_text()
    assert (
        "| mvtec_ad_grid_mini | 0.92 ± 0.03 / 0.85 ± 0.07 (2 seeds) | 0.81 ± 0.01 / 0.60 ± 0.00 (2 seeds) | 42, 43, 44 |"
        in readme.read_text()
    )
    # seeds 43 and 44 only; train s and ms/image from A's cell alone; steps from both
    assert (
        "| ssim_ae (2) | 0.850 ± 0.071 | 0.920 ± 0.028 | 0.500 ± 0.000 | 0.900 ± 0.000 | – | 180 | 4000 ± 0 | 50 |"
        in table
    )
    assert ("## Starved cells, left out of the means\n\nWall-clock cells that trained fewer than 75% of the steps of "
            "their best seed") in table  # fmt: skip
    assert "- mvtec_ad_grid_mini / ssim_ae / seed 42: 1000 steps in 180.0 s\n" in table
    assert "Fastflow / seed 43" not in table
    assert (
        "1 cell(s) of models that train ran for the optimiser steps of the same model's wall-clock cells (or, where "
        "those were all starved, its twin's: `--match-steps`), not for the seconds: 1 on X · 2 cores. Train and test "
        "times are those of the A · 2 cores cells."
    ) in table
    assert "Warning" not in table  # the wall-clock cells all ran on A
    rows = list(csv.DictReader(line for line in (out / "short.csv").open() if not line.startswith("#")))
    assert [(r["model"], r["seed"], r["budget"], r["starved"]) for r in rows] == [
        ("Fastflow", "42", "300 s", "False"), ("Fastflow", "43", "300 s", "False"),
        ("ssim_ae", "42", "300 s", "True"), ("ssim_ae", "43", "300 s", "False"), ("ssim_ae", "44", "4000 steps", "False"),
    ]  # fmt: skip


def test_denoising_twin_is_a_yardstick(tmp_path: Path) -> None:
    """SSIM-DAEe trains SSIM-AEe's network: its only seed, at 322 steps where the twin reached 821 on the same machine
    (mvtec3d_tire, 2026-11-30), was starved; ``--match-steps`` then takes the twin's count and names it."""
    out = tmp_path / "compare"
    a = {"machine": "A · 2 cores", "train_s": 301.0}
    cells = [cell("ssim_ae_extended", 42, 0.6, 0.93, steps=821, **a),
             cell("ssim_dae_extended", 42, 0.5, 0.91, steps=322, **a),
             cell("ssim_ae", 42, 0.6, 0.93, steps=3000, **a), cell("ssim_dae", 42, 0.6, 0.93, steps=2400, **a)]  # fmt: skip
    for record in cells:
        write_cell(out, record)
    root = out / "cells/short/mvtec_ad_grid_mini"
    models = [c["model"] for c in cells]
    (kin, *found), _ = call("compare.cells", ("siblings", root / "ssim_dae_extended"),
                            *[("siblings", root / model) for model in models],
                            *[("reference_steps", root / m) for m in ("ssim_dae_extended", "ssim_dae", "ssim_ae_extended",
                                                                      "Fastflow")])  # fmt: skip
    assert [r["steps"] for r in kin] == [322, 821]
    judged, _ = call("compare.cells", *[("starved", c, kin) for c, kin in zip(cells, found[:4], strict=True)])
    assert judged == [False, True, False, False]  # 2400/3000 = 0.8
    assert found[4] == {"max_steps": 821, "steps_from": "ssim_ae_extended seed 42, 301.0 s on A · 2 cores"}
    assert found[5] == {"max_steps": 2400, "steps_from": "seed 42, 301.0 s on A · 2 cores"}
    assert found[6]["max_steps"] == 821  # a starved twin never raises a count
    assert found[7] is None  # no twin, no cells

    other = out / "cells/short/deeppcb"
    twins = [cell("ssim_ae", 42, 0.6, 0.9, steps=3000, **a), cell("ssim_dae", 42, 0.6, 0.9, steps=2200, **a),
             cell("ssim_dae", 43, 0.6, 0.9, steps=2300, **a), cell("ssim_ae_extended", 42, 0.6, 0.9, steps=900, **a)]  # fmt: skip
    twins = [t | {"dataset": "deeppcb"} for t in twins]
    for record in twins:
        write_cell(out, record)
    kin, _ = call("compare.cells", *[("siblings", other / c["model"]) for c in twins[1:3]])
    (judged, same_model, alone), _ = call(
        "compare.cells",
        ("starved", twins[1], kin[0]),
        ("reference_steps", other / "ssim_dae"),
        ("reference_steps", other / "ssim_dae_extended"),
    )
    twin_judged, _ = call("compare.cells", ("starved", twins[2], kin[1]))
    # two seeds of its own on the machine: judged by them, not by the twin (2200 < 0.75 x 3000 would be starved)
    assert [judged, *twin_judged] == [False, False]
    assert same_model["max_steps"] == 2300
    # no wall-clock cell of its own: --match-steps must refuse, not borrow ...
    assert alone is None
    # ... unless its cells were starved and kept aside by --rerun-starved
    (other / "ssim_dae_extended").mkdir()
    (other / "ssim_dae_extended/seed42.json.starved").write_text("{}")
    (borrowed,), _ = call("compare.cells", ("reference_steps", other / "ssim_dae_extended"))
    assert borrowed["steps_from"] == "ssim_ae_extended seed 42, 301.0 s on A · 2 cores"

    shutil.rmtree(other)  # the report below covers mvtec_ad_grid_mini only
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    assert "- mvtec_ad_grid_mini / ssim_dae_extended / seed 42: 322 steps in 301.0 s\n" in report(
        out, "--readme", readme
    )
    rows = list(csv.DictReader(line for line in (out / "short.csv").open() if not line.startswith("#")))
    assert {r["model"]: r["starved"] for r in rows} == {
        "ssim_ae": "False", "ssim_ae_extended": "False", "ssim_dae": "False", "ssim_dae_extended": "True"}  # fmt: skip


def test_cell_found_collapsed_after_the_run(tmp_path: Path) -> None:
    """hazelnut_toy's extended cells finished "ok" but had collapsed (a guard of the time missed it): marked failed by
    hand, they leave the means and are listed, but their step count stays the budget that ``--match-steps`` replays,
    also once ``--rerun-failed`` has set them aside. Old records say no precision: ours trained in bf16 on a CPU with
    bf16 units (``train_precision: auto``), in fp32 elsewhere; anomalib's models in fp32."""
    out = tmp_path / "compare"
    bf16 = {"machine": "EPYC · 2 cores · flags ['avx512f', 'avx512_bf16', 'avx2']", "train_s": 300.3}
    seen = "collapsed at step ~420 into one fixed saturated image"
    cells = [
        cell("ssim_ae_extended", 42, 1.0, 0.9857, steps=770, status="failed", error=f"collapse: {seen}",
             collapsed=seen, **bf16),
        cell("ssim_ae_extended", 43, 1.0, 0.99, steps=770, budget={"max_steps": 770, "steps_from": "seed 42"},
             machine="EPYC · 2 cores · flags ['avx2']", precision="32-true"),
        cell("ssim_ae_extended", 44, 0.9, 0.97, steps=770, budget={"max_steps": 770, "steps_from": "seed 42"},
             machine="EPYC · 2 cores · flags ['avx2']", precision="32-true"),
        cell("ssim_ae", 42, 0.8, 0.9, steps=2287, **bf16), cell("Padim", 42, 0.7, 0.95, **bf16),
    ]  # fmt: skip
    for record in cells:
        write_cell(out, record)
    folder = out / "cells/short/mvtec_ad_grid_mini/ssim_ae_extended"
    (steps,), _ = call("compare.cells", ("reference_steps", folder))
    assert steps == {"max_steps": 770, "steps_from": f"seed 42, 300.3 s on {bf16['machine']}"}
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    table = report(out, "--readme", readme)
    assert "| ssim_ae_extended (2) | 0.950 ± 0.071 | 0.980 ± 0.014 |" in table  # seeds 43, 44: the collapse left out
    assert f"mvtec_ad_grid_mini / ssim_ae_extended / seed 42: collapse: {seen}" in table
    assert ("Our variants trained in bf16 autocast on CPUs with bf16 units and in fp32 elsewhere (`precision` in the "
            "CSV): 2 cells 32-true, 1 cell bf16-mixed.") in table  # fmt: skip
    rows = list(csv.DictReader(line for line in (out / "short.csv").open() if not line.startswith("#")))
    assert [(r["model"], r["seed"], r["status"], r["precision"]) for r in rows] == [
        ("Padim", "42", "ok", "32-true"), ("ssim_ae", "42", "ok", "bf16-mixed"),
        ("ssim_ae_extended", "42", "failed", ""), ("ssim_ae_extended", "43", "ok", "32-true"),
        ("ssim_ae_extended", "44", "ok", "32-true"),
    ]  # fmt: skip

    (_, steps), _ = call("compare.cells", ("set_aside", folder / "seed42.json", "failed"),  # as --rerun-failed does
                         ("reference_steps", folder))  # fmt: skip
    assert steps["max_steps"] == 770
    report(out, "--readme", readme)  # the set-aside failure is still listed, not forgotten
    assert (f"## Failed, then rerun\n\nRecords that `--rerun-failed` kept aside as `seed<N>.json.failed` (with their "
            "logs) before the cell ran again:\n\n- mvtec_ad_grid_mini / ssim_ae_extended / seed 42 "
            f"(seed42.json.failed): collapse: {seen} (EPYC, no date)") in (out / "short.md").read_text()  # fmt: skip
    assert "0 failed cell(s) and 1 earlier failure(s) since rerun, listed in" in readme.read_text()
    guard = folder.with_name("ssim_dae_extended")  # stopped by the guard: no steps to replay, and no twin cell
    write_cell(out, {"model": "ssim_dae_extended", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short",
                     "status": "failed", "error": "collapse"})  # fmt: skip
    assert call("compare.cells", ("reference_steps", guard))[0] == [None]
