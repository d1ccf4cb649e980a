"""The comparison grid's runner (benchmarks/compare.py) on its failure paths: every failure is named and listed, none
is counted as a result, and nothing is lost or left running."""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_ssimae.precision import training_precision

from .helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from compare import cell_path, cell_tier, main
from compare_report import BEGIN, END, report, update_readme

GRID = ["--models", "Padim", "--datasets", "mvtec_ad_grid_mini", "--seeds", "42"]


def test_unreadable_record_is_a_named_failure(tmp_path: Path, capsys) -> None:
    """A record cut short (or edited into something else) is neither a result nor a crash: the run and the report
    list it as failed with its file, and the run exits 1."""
    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42)
    path.parent.mkdir(parents=True)
    path.write_text('{"model": "Padim", "dataset": "mvtec_ad_grid_mini", "se')

    assert main(["run", *GRID, "--out", str(out), "--data-root", str(root)]) == 1
    printed = capsys.readouterr().out
    assert "seed 42: failed, kept" in printed
    assert f"FAILED mvtec_ad_grid_mini Padim seed 42: unreadable cell record {path}: Unterminated string" in printed
    assert report(out, "short", None) == 0
    assert f"- mvtec_ad_grid_mini / Padim / seed 42: unreadable cell record {path}" in (out / "short.md").read_text()


def test_missing_dataset_stops_before_any_cell(tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare"
    assert main(["run", *GRID, "--out", str(out), "--data-root", str(tmp_path)]) == 2
    assert capsys.readouterr().out.startswith(f"--data-root {tmp_path} lacks mvtec_ad_grid_mini (MVTec AD layout")
    assert not out.exists()


def test_split_without_defects_or_training_images_fails_before_training(tmp_path: Path) -> None:
    """AUROC is undefined without defective test images; anomalib's metrics would have stored 0.0 as a result."""
    folder = tmp_path / "data/mvtec_ad_grid_mini"
    for split in ("train", "test"):
        (folder / split / "good").mkdir(parents=True)
        for i in range(2):
            gray = np.random.default_rng(i).integers(0, 256, (64, 64), dtype=np.uint8)
            Image.fromarray(gray).save(folder / split / "good" / f"{i:03d}.png")
    out = tmp_path / "compare"
    assert main(["cell", "Padim", "mvtec_ad_grid_mini", "42", "short", "--data-root", str(tmp_path / "data"),
                 "--out", str(out)]) == 1  # fmt: skip
    record = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())
    assert (record["status"], record["error"]) == (
        "failed",
        f"ValueError: {folder / 'test'}: only good test images; image and pixel AUROC need both good and defective ones",
    )
    for image in (folder / "train/good").iterdir():
        image.unlink()
    assert main(["cell", "Padim", "mvtec_ad_grid_mini", "42", "short", "--data-root", str(tmp_path / "data"),
                 "--out", str(out)]) == 1  # fmt: skip
    record = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())
    assert record["error"] == f"ValueError: {folder / 'train/good'}: no training images"
    # where it ran, as every record says: training budgets are wall time, so the machine matters
    from machine import commit, describe

    assert record["machine"] == describe() and record["commit"].removesuffix("+modified") == commit()
    assert record["date"] == datetime.date.today().isoformat() and record["versions"].startswith("anomalib-ssimae ")


def test_defective_image_without_mask_is_named(tmp_path: Path) -> None:
    """anomalib's MVTecAD fails in pandas without naming a file when ground_truth/ lacks a mask."""
    folder = tmp_path / "data/mvtec_ad_grid_mini"
    gray = np.zeros((64, 64), dtype=np.uint8)
    for image in ("train/good/000.png", "test/good/000.png", "test/crack/000.png", "test/crack/001.png",
                  "ground_truth/crack/000_mask.png", "ground_truth/crack/0011_mask.png"):  # fmt: skip
        (folder / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray).save(folder / image)
    out = tmp_path / "compare"
    assert main(["cell", "Padim", "mvtec_ad_grid_mini", "42", "long", "--data-root", str(tmp_path / "data"),
                 "--out", str(out)]) == 1  # fmt: skip
    assert not (out / "cells/long").exists()  # a one-pass model's cell is the short tier's, whatever the tier
    record = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())
    assert record["error"] == (  # 0011_mask.png is not 001.png's mask
        f"FileNotFoundError: {folder / 'test/crack/001.png'}: no mask in {folder / 'ground_truth/crack'} "
        "(001.png or 001_mask.png); pixel metrics need one"
    )


def test_readme_needs_one_marked_section(tmp_path: Path, capsys) -> None:
    """Markers swapped, doubled or missing: the README is left as it was (before, text after the section was lost)."""
    readme = tmp_path / "README.md"
    for text in (f"a\n{END}\nb\n{BEGIN}\nkeep me\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", "no markers\n"):
        readme.write_text(text)
        assert not update_readme(readme, f"{BEGIN}\nnew\n{END}")
        assert readme.read_text() == text
        assert "not updated: it needs one" in capsys.readouterr().out
    out = tmp_path / "compare"
    compare_cell = {"model": "Padim", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short", "status": "ok"}
    cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).parent.mkdir(parents=True)
    cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).write_text(json.dumps(compare_cell))
    assert report(out, "short", readme) == 1  # the table was not written where asked: the command says so
    assert readme.read_text() == "no markers\n"
    readme.write_text(f"a\n{BEGIN}\nold\n{END}\nb\n")
    assert update_readme(readme, f"{BEGIN}\nnew\n{END}")
    assert readme.read_text() == f"a\n{BEGIN}\nnew\n{END}\nb\n"


def test_one_pass_models_and_stray_folders_by_tier() -> None:
    assert [cell_tier(m, "long") for m in ("Padim", "Patchcore", "Dfm")] == ["short"] * 3
    assert [cell_tier(m, "long") for m in ("ssim_ae", "Fastflow", "Cflow", "Stfpm")] == ["long"] * 4  # Stfpm: unknown


def test_a_cell_that_dies_says_how(tmp_path: Path, monkeypatch, capsys) -> None:
    """A cell killed before writing its record (out of memory, a signal) is a failure that says so and names its log."""
    import compare

    def killed(command: list[str], log, timeout: float) -> int:
        log.write("Epoch 3: 40%|####      | 2/5\n")
        return -signal.SIGKILL

    monkeypatch.setattr(compare, "run_child", killed)
    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    assert main(["run", *GRID, "--out", str(out), "--data-root", str(root)]) == 1
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42)
    error = f"killed by signal 9; log {path.with_suffix('.log')}: Epoch 3: 40%|####      | 2/5"
    record = json.loads(path.read_text())
    assert record["error"] == error and record["machine"].endswith(f"Python {platform.python_version()}")
    assert f"FAILED mvtec_ad_grid_mini Padim seed 42: {error}" in capsys.readouterr().out

    # --rerun-failed runs it again and keeps the failed record and its log aside: the evidence is not lost
    assert main(["run", *GRID, "--out", str(out), "--data-root", str(root), "--rerun-failed"]) == 1
    assert "seed 42: failed, kept as seed42.json.failed" in capsys.readouterr().out
    assert json.loads(path.with_name("seed42.json.failed").read_text())["error"] == error
    assert path.with_name("seed42.log.failed").read_text() == "Epoch 3: 40%|####      | 2/5\n"
    assert json.loads(path.read_text())["error"] == error  # the rerun's own record (killed the same way)
    assert main(["run", *GRID, "--out", str(out), "--data-root", str(root), "--rerun-failed"]) == 1
    assert path.with_name("seed42.json.failed-2").exists() and path.with_name("seed42.log.failed-2").exists()


RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
from compare import run_child
with open(sys.argv[2], "w") as log:
    run_child([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)"], log, 300)
"""


def test_stopped_runner_stops_its_cell(tmp_path: Path) -> None:
    """SIGTERM to the grid's runner ends the cell's process too: a restarted grid would otherwise train a second copy
    beside the first (before, the cell ran on under init for its whole budget)."""
    log = tmp_path / "cell.log"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(REPO / "benchmarks"), str(log)])
    for _ in range(200):
        if log.exists() and log.read_text().strip():
            break
        time.sleep(0.1)
    cell = int(log.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 128 + signal.SIGTERM
    for _ in range(100):
        try:
            os.kill(cell, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(cell, signal.SIGKILL)
        raise AssertionError(f"cell process {cell} outlived its runner")


def constructed_dataset(root: Path, dataset: str = "mvtec_ad_grid_mini") -> Path:
    """A grid-like texture (period 16 px, noise) in MVTec AD layout: 6 training and 2 good test images, and 2 test
    images with a white 48 x 48 square and its mask."""
    folder = root / dataset
    yy, xx = np.mgrid[:256, :256]
    texture = 100 + 60 * ((yy % 16 < 3) | (xx % 16 < 3))
    for split, name, seed in [("train", "good", s) for s in range(6)] + [("test", "good", 6), ("test", "good", 7)]:
        (folder / split / name).mkdir(parents=True, exist_ok=True)
        noisy = texture + np.random.default_rng(seed).normal(0, 6, texture.shape)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).convert("RGB").save(folder / split / name / f"{seed}.png")
    for index, (top, left) in enumerate([(40, 60), (150, 120)]):
        mask = np.zeros((256, 256), np.uint8)
        mask[top : top + 48, left : left + 48] = 255
        image = (texture + np.random.default_rng(10 + index).normal(0, 6, texture.shape)).clip(0, 255)
        image[mask > 0] = 255
        for sub, array in (("test/square", image), ("ground_truth/square", mask)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).convert("RGB").save(folder / "test/square" / f"{index:03d}.png")
        Image.fromarray(mask).save(folder / "ground_truth/square" / f"{index:03d}_mask.png")
    return root


@pytest.mark.slow
def test_grid_end_to_end_with_a_budget_of_seconds(tmp_path: Path) -> None:
    """The whole path of a cell, ours and a peer, on constructed images: a 10-second tier of its own, real metrics
    in the records, the paper's protocol for ours, and a report (issue 9: the benchmark command in CI)."""
    root, out = constructed_dataset(tmp_path / "data"), tmp_path / "compare"
    args = ["--tier", "10s", "--models", "ssim_ae", "Padim", "--datasets", "mvtec_ad_grid_mini", "--seeds", "42"]

    assert main(["run", *args, "--data-root", str(root), "--out", str(out)]) == 0
    ours = json.loads(cell_path(out, "10s", "mvtec_ad_grid_mini", "ssim_ae", 42).read_text())
    peer = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())  # one pass: short tier
    assert (ours["status"], ours["tier"], peer["status"]) == ("ok", "10s", "ok")
    assert ours["date"] == peer["date"] == datetime.date.today().isoformat() and ours["machine"] == peer["machine"]
    assert 10 <= ours["train_s"] < 60 and ours["steps"] > 0  # stopped by the 10 s budget, after some steps
    assert sorted(ours["labels"]) == [0, 0, 1, 1] and ours["test_images"] == 4
    # 10 s train too little to judge ours by (its quality is tested on real data elsewhere); the metrics are wired
    assert all(0 <= ours[k] <= 1 for k in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Max", "paper_AUROC"))
    assert len(ours["paper_fpr"]) == len(ours["paper_tpr"]) == 50  # the paper's 50 thresholds
    # PaDiM's maps must meet the masks where they are: the squares stand out even to a random-weight backbone
    assert peer["image_AUROC"] == 1.0 and peer["pixel_AUROC"] > 0.99 and peer["pixel_AUPRO"] > 0.99
    assert "paper_AUROC" not in peer and peer["pretrained"] is False
    assert (ours["precision"], peer["precision"]) == (training_precision("auto"), "32-true")  # bf16 only where it pays
    # another machine's seed: the steps of the wall-clock cell, exactly (within an image batch too), not the seconds
    more = ["--tier", "10s", "--models", "ssim_ae", "--datasets", "mvtec_ad_grid_mini", "--seeds", "43"]
    assert main(["run", *more, "--match-steps", "--data-root", str(root), "--out", str(out)]) == 0
    matched = json.loads(cell_path(out, "10s", "mvtec_ad_grid_mini", "ssim_ae", 43).read_text())
    assert matched["steps"] == ours["steps"] and matched["budget"]["max_steps"] == ours["steps"]
    assert matched["budget"]["steps_from"] == f"seed 42, {ours['train_s']} s on {ours['machine']}"
    assert ours["budget"] == {"max_time_s": 10} and peer["budget"] == {"one_pass": True}
    assert report(out, "10s", None) == 0
    table = (out / "10s.md").read_text()
    assert "# Comparison, 10s tier (10 s of training for models that train)" in table
    assert "1 cell(s) of models that train ran for the optimiser steps" in table and "| ssim_ae (2) |" in table


@pytest.mark.slow
def test_a_dataset_of_ones_own(tmp_path: Path, capsys) -> None:
    """Any MVTec-layout folder under --data-root can be compared; our variants first ask for its data config."""
    root, out = constructed_dataset(tmp_path / "data", "my_parts"), tmp_path / "compare"
    args = ["--datasets", "my_parts", "--seeds", "42", "--data-root", str(root), "--out", str(out)]

    for bad in ("data/my_parts", "../my_parts", ".."):  # a cell folder outside cells/<tier>/
        with pytest.raises(SystemExit):
            main(["run", "--datasets", bad])
        assert f"argument --datasets: {bad!r}: a folder name under --data-root" in capsys.readouterr().err
    assert main(["run", "--models", "Padim", "ssim_ae", *args]) == 2  # before any cell runs
    assert "configs/data/my_parts.yaml missing" in capsys.readouterr().out and not out.exists()
    assert main(["run", "--models", "Padim", *args]) == 0
    record = json.loads(cell_path(out, "short", "my_parts", "Padim", 42).read_text())
    assert record["image_AUROC"] == 1.0 and record["pixel_AUROC"] > 0.99  # the squares stand out


def test_provenance_marks_new_code_and_survives_without_git(tmp_path: Path, monkeypatch) -> None:
    """A new data config is code the cell ran on; and a machine without git or lscpu still runs its cells."""
    import machine

    repo = tmp_path / "repo"
    (repo / "configs/data").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "c"]):
        subprocess.run(git + command, check=True)
    monkeypatch.setattr(machine, "REPO", repo)
    head = machine.commit()
    (repo / "configs/README.md").write_text("notes\n")  # documentation is not code
    assert len(head) >= 7 and machine.code_commit() == head
    (repo / "configs/data/my_parts.yaml").write_text("model: {}\n")  # untracked: git diff alone would miss it
    assert machine.code_commit() == head + "+modified"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert machine.code_commit() == "" and machine.describe().startswith("? · ")


def test_rerun_starved_and_match_steps(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--match-steps`` needs a wall-clock cell to take the steps from (one clear error before any cell), passes
    itself to the cells of models that train only; ``--rerun-starved`` keeps the starved record beside the new one."""
    import compare

    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    ok = {"dataset": "mvtec_ad_grid_mini", "tier": "short", "status": "ok", "train_s": 300.0}
    for seed, steps in ((42, 900), (43, 3600)):
        compare.write_json(cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", seed),
                           {**ok, "model": "ssim_ae", "seed": seed, "steps": steps})  # fmt: skip
    cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42).with_suffix(".log").write_text(
        "the starved cell's log\n"
    )
    commands = []

    def fake(command: list[str], log, timeout: float) -> int:
        commands.append((command[3:6], "--match-steps" in command, timeout))
        model, dataset, seed = command[3:6]
        compare.write_json(cell_path(out, cell_tier(model, "short"), dataset, model, int(seed)),
                           {**ok, "model": model, "seed": int(seed), "steps": 3600})  # fmt: skip
        return 0

    monkeypatch.setattr(compare, "run_child", fake)
    args = ["run", "--datasets", "mvtec_ad_grid_mini", "--data-root", str(root), "--out", str(out), "--match-steps"]
    assert main([*args, "--models", "ssim_ae", "Fastflow", "--seeds", "42", "43"]) == 2  # Fastflow has no reference
    assert capsys.readouterr().out == (
        f"--match-steps: no wall-clock cell in {out / 'cells/short'} to take the steps from for "
        "mvtec_ad_grid_mini/Fastflow; run those without --match-steps first\n"
    )
    assert commands == []
    assert main([*args, "--models", "ssim_ae", "--seeds", "42", "--hf-cache", str(tmp_path)]) == 0  # ours: from scratch
    assert main([*args, "--models", "Fastflow", "--seeds", "42", "--hf-cache", str(tmp_path)]) == 2
    assert "mvtec_ad_grid_mini/Fastflow-pretrained; run those" in capsys.readouterr().out  # its own folder
    assert commands == []
    assert main([*args, "--models", "ssim_ae", "Padim", "--seeds", "42", "43", "44", "--rerun-starved"]) == 0
    assert commands == [  # seed 42 starved (900 < 0.75 x 3600), 43 kept, 44 new; PaDiM makes one pass: no steps
        (["ssim_ae", "mvtec_ad_grid_mini", "42"], True, 4 * 300 + 1800),
        (["ssim_ae", "mvtec_ad_grid_mini", "44"], True, 4 * 300 + 1800),
        (["Padim", "mvtec_ad_grid_mini", "42"], False, 300 + 1800),
        (["Padim", "mvtec_ad_grid_mini", "43"], False, 300 + 1800),
        (["Padim", "mvtec_ad_grid_mini", "44"], False, 300 + 1800),
    ]
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42)
    assert json.loads(path.with_name("seed42.json.starved").read_text())["steps"] == 900  # nothing lost
    assert json.loads(path.read_text())["steps"] == 3600
    assert "seed 42: starved (900 steps), kept as seed42.json.starved" in capsys.readouterr().out
    assert path.with_name("seed42.log.starved").read_text() == "the starved cell's log\n"


@pytest.mark.parametrize("command", ["run", "cell", "report"])
def test_every_subcommand_prints_its_help(command: str, capsys) -> None:
    """``--help`` printed nothing but a traceback for ``run``: a help text's bare ``%`` (from ``{STARVED:.0%}``)
    is a format directive to argparse. Each subcommand's help now prints and names its options."""
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: ") and f" {command} " in printed.splitlines()[0] + " "
    if command == "run":
        assert "--rerun-starved" in printed
        assert "fewer than 75% of their best sibling's steps" in " ".join(printed.split())


def test_kept_cell_names_the_data_it_ran_on(tmp_path: Path, capsys) -> None:
    """A finished cell is kept by its path alone; when it ran on another --data-root, the run says so instead of
    silently passing old results off as the new data's."""
    import compare

    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    record = {"model": "Padim", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short", "status": "ok"}
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42)
    compare.write_json(path, {**record, "data_root": str(root.resolve())})
    assert main(["run", *GRID, "--out", str(out), "--data-root", str(root)]) == 0
    assert capsys.readouterr().out.endswith("seed 42: ok, kept\n")
    compare.write_json(path, {**record, "data_root": "/elsewhere"})
    assert main(["run", *GRID, "--out", str(out), "--data-root", str(root)]) == 0
    assert "seed 42: ok, kept (it ran on /elsewhere: another --out for other data)" in capsys.readouterr().out
