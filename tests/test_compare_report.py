"""The comparison report (benchmarks/compare_report.py) on constructed cells: spreads over seeds, failures listed
with their errors, and the README section regenerated from the cells, not typed."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from .helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from compare import cell_path, write_json
from compare_report import BEGIN, END, margins, report


def cell(model: str, seed: int, image: float, pixel: float, **extra: object) -> dict:
    return {"model": model, "dataset": "mvtec_ad_grid_mini", "seed": seed, "tier": "short", "status": "ok",
            "pretrained": False, "image_AUROC": image, "pixel_AUROC": pixel, "pixel_AUPRO": 0.5, "image_F1Max": 0.9,
            "train_s": 180.0, "test_ms_per_image": 50.0, "peak_rss_mb": 1500, "parameters": 2_345_678,
            "scores": [0.1, 0.9, 0.8, 0.2], "labels": [0, 1, 1, 0], **extra}  # fmt: skip


def test_report_from_cells(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42), cell("ssim_ae", 42, 0.8, 0.90))
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 43), cell("ssim_ae", 43, 0.9, 0.94))
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42), cell("Padim", 42, 0.576, 0.697))
    pretrained = cell("Padim", 43, 0.9, 0.95, pretrained=True)  # never averaged with the from-scratch runs
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 43, pretrained=True), pretrained)
    failure = {"model": "Cflow", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short", "status": "failed",
               "error": "RuntimeError: out of memory"}  # fmt: skip
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "Cflow", 42), failure)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nold numbers\n{END}\n\n## License\n")

    assert report(out, "short", readme) == 0

    rows = list(csv.DictReader(line for line in (out / "short.csv").open() if not line.startswith("#")))
    assert [(r["model"], r["seed"], r["status"]) for r in rows] == [
        ("Cflow", "42", "failed"), ("Padim", "42", "ok"), ("Padim", "43", "ok"), ("ssim_ae", "42", "ok"),
        ("ssim_ae", "43", "ok"),
    ]  # fmt: skip
    table = (out / "short.md").read_text()
    assert "| ssim_ae (2) | 0.850 ± 0.071 | 0.920 ± 0.028 |" in table  # mean ± sample sd of two seeds
    assert "| Padim (1) | 0.576 | 0.697 |" in table
    assert "4 cells: 0.2 h of training and testing" in table  # 4 x 180 s; the failed cell has no time
    assert table.count("| 1500 | 2.35 M |") == 2 and "| 1500 ± 0 | 2.35 M |" in table  # peak RSS MB, parameters
    assert "| Padim (pretrained) (1) | 0.900 | 0.950 |" in table
    assert "mvtec_ad_grid_mini / Cflow / seed 42: RuntimeError: out of memory" in table
    assert "every image defective: 0.667." in table  # F1Max floor: 2 of 4 images defective, 2p / (1 + p)
    text = readme.read_text()
    assert "old numbers" not in text
    assert text.startswith("# title\n\n" + BEGIN) and text.endswith(END + "\n\n## License\n")
    assert (
        "| mvtec_ad_grid_mini | 0.92 ± 0.03 / 0.85 ± 0.07 | failed | 0.70 / 0.58 (1 seed) | 0.95 / 0.90 (1 seed) "
        "| 42, 43 |" in text
    )  # ours first; a model run on fewer seeds than the row's says so
    assert "| mvtec_ad_grid_mini | ssim_ae 0.92 vs Padim 0.70: +0.22 (1 seed) |" in text  # not the pretrained 0.95
    assert "1 failed cell(s)" in text
    assert "3 of the full grid's 180 cells have run" in text  # 10 models x 6 datasets x 3 seeds; no pretrained
    for name in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "roc", "time_vs_pixel_auroc"):
        assert (out / f"short_{name}.png").stat().st_size > 10_000


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
    header, rule, row = margins(cells)
    assert header.startswith("| dataset | pixel AUROC: best of ours vs best peer |") and rule.startswith("|---|")
    assert row == (
        "| mvtec_ad_grid_mini | ssim_ae 0.92 vs Fastflow 0.99: -0.07 loss "
        "| ssim_ae 0.50 vs Fastflow 0.50: +0.00 within spread | ssim_ae 0.85 vs Fastflow 0.60: +0.25 win |"
    )


def test_one_pass_models_serve_every_tier(tmp_path: Path) -> None:
    """A long-tier grid neither reruns PaDiM (no training budget) nor mixes short-tier training into its table."""
    from compare import main

    out = tmp_path / "compare"
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42), cell("Padim", 42, 0.576, 0.697))
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42), cell("ssim_ae", 42, 0.8, 0.90))
    long = cell("ssim_ae", 42, 0.9, 0.95, tier="long", train_s=1200.0)
    write_json(cell_path(out, "long", "mvtec_ad_grid_mini", "ssim_ae", 42), long)
    args = ["--tier", "long", "--models", "Padim", "ssim_ae", "--datasets", "mvtec_ad_grid_mini", "--seeds", "42"]

    assert main(["run", *args, "--out", str(out)]) == 0  # both cells found: nothing runs
    assert not (out / "cells/long/mvtec_ad_grid_mini/Padim").exists()
    assert report(out, "long", None) == 0
    table = (out / "long.md").read_text()
    assert "| Padim (1) | 0.576 | 0.697 |" in table and "| ssim_ae (1) | 0.900 | 0.950 |" in table
    assert "| ssim_ae (1) | 0.800 |" not in table  # the short tier's training run stays in the short table
    assert "2 cells: 0.4 h" in table  # 1200 s + 180 s


def test_copied_records_and_undefined_metrics_are_not_counted(tmp_path: Path) -> None:
    """A copied record would count one run twice and shrink the spread; a NaN would turn the mean into NaN."""
    out = tmp_path / "compare"
    first = cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42)
    write_json(first, cell("ssim_ae", 42, 0.8, 0.90))
    write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 43),
               cell("ssim_ae", 43, 0.9, 0.94, pixel_AUPRO=float("nan")))  # fmt: skip
    for copy in ("seed42 copy.json", "seed44.json"):
        (first.parent / copy).write_text(first.read_text())

    assert report(out, "short", None) == 0
    table = (out / "short.md").read_text()
    assert "| ssim_ae (2) | 0.850 ± 0.071 | 0.920 ± 0.028 | 0.500 |" in table  # AUPRO from seed 42 alone
    for copy in ("seed42 copy.json", "seed44.json"):
        assert (f"{first.parent / copy}: it holds the record of mvtec_ad_grid_mini/ssim_ae/seed42.json: copied or "
                "renamed? Not counted") in table  # fmt: skip
    assert (
        "## Undefined metrics (NaN), left out of the means and spreads\n\n- mvtec_ad_grid_mini / ssim_ae / seed 43: pixel_AUPRO\n"
        in table
    )
