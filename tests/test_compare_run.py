"""The comparison grid's runner and job (``python benchmarks/compare/run.py``, ``.../job.py``) on their failure paths:
every failure is named and listed, none is counted as a result, and nothing is lost or left running."""

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

from .benchmark_scripts import BEGIN, END, benchmark, call, run_code, write_cell
from .helpers import REPO

GRID = ["--models", "Padim", "--datasets", "mvtec_ad_grid_mini", "--seeds", "42"]


def cell_path(out: Path, tier: str, dataset: str, model: str, seed: int, pretrained: bool = False) -> Path:
    """Where the comparison stores a cell's record (the layout of the committed records)."""
    return out / "cells" / tier / dataset / (f"{model}-pretrained" if pretrained else model) / f"seed{seed}.json"


def run(*args: object) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/compare/run.py ARGS``: a grid."""
    return benchmark("compare/run.py", *args)


def job(*args: object) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/compare/job.py ARGS``: one cell."""
    return benchmark("compare/job.py", *args)


def report(out: Path, *args: object) -> int:
    """``python benchmarks/compare/report.py --out OUT ARGS``: its exit code."""
    return benchmark("compare/report.py", "--out", out, *args).returncode


def test_unreadable_record_is_a_named_failure(tmp_path: Path) -> None:
    """A record cut short (or edited into something else) is neither a result nor a crash: the run and the report
    list it as failed with its file, and the run exits 1."""
    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42)
    path.parent.mkdir(parents=True)
    path.write_text('{"model": "Padim", "dataset": "mvtec_ad_grid_mini", "se')

    ran = run(*GRID, "--out", out, "--data-root", root)
    assert ran.returncode == 1
    assert "seed 42: failed, kept" in ran.stdout
    assert f"FAILED mvtec_ad_grid_mini Padim seed 42: unreadable cell record {path}: Unterminated string" in ran.stdout
    assert report(out) == 0
    assert f"- mvtec_ad_grid_mini / Padim / seed 42: unreadable cell record {path}" in (out / "short.md").read_text()


def test_missing_dataset_stops_before_any_cell(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    ran = run(*GRID, "--out", out, "--data-root", tmp_path)
    assert ran.returncode == 2
    assert ran.stdout.startswith(f"--data-root {tmp_path} lacks mvtec_ad_grid_mini (MVTec AD layout")
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
    assert (
        job("Padim", "mvtec_ad_grid_mini", 42, "short", "--data-root", tmp_path / "data", "--out", out).returncode == 1
    )
    record = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())
    assert (record["status"], record["error"]) == (
        "failed",
        f"ValueError: {folder / 'test'}: only good test images; image and pixel AUROC need both good and defective ones",
    )
    for image in (folder / "train/good").iterdir():
        image.unlink()
    assert (
        job("Padim", "mvtec_ad_grid_mini", 42, "short", "--data-root", tmp_path / "data", "--out", out).returncode == 1
    )
    record = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())
    assert record["error"] == f"ValueError: {folder / 'train/good'}: no training images"
    # where it ran, as every record says: training budgets are wall time, so the machine matters
    (describe, commit), _ = call("machine", ("describe",), ("commit",))
    assert record["machine"] == describe and record["commit"].removesuffix("+modified") == commit
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
    assert (
        job("Padim", "mvtec_ad_grid_mini", 42, "long", "--data-root", tmp_path / "data", "--out", out).returncode == 1
    )
    assert not (out / "cells/long").exists()  # a one-pass model's cell is the short tier's, whatever the tier
    record = json.loads(cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42).read_text())
    assert record["error"] == (  # 0011_mask.png is not 001.png's mask
        f"FileNotFoundError: {folder / 'test/crack/001.png'}: no mask in {folder / 'ground_truth/crack'} "
        "(001.png or 001_mask.png); pixel metrics need one"
    )


def test_readme_needs_one_marked_section(tmp_path: Path) -> None:
    """Markers swapped, doubled or missing: the README is left as it was (before, text after the section was lost)."""
    readme = tmp_path / "README.md"
    for text in (f"a\n{END}\nb\n{BEGIN}\nkeep me\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", "no markers\n"):
        readme.write_text(text)
        (updated,), printed = call("compare.report", ("update_readme", readme, f"{BEGIN}\nnew\n{END}"))
        assert not updated
        assert readme.read_text() == text
        assert "not updated: it needs one" in printed
    out = tmp_path / "compare"
    write_cell(out, {"model": "Padim", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short", "status": "ok"})
    assert report(out, "--readme", readme) == 1  # the table was not written where asked: the command says so
    assert readme.read_text() == "no markers\n"
    summary = tmp_path / "summary.md"  # the compact table's section, likewise
    summary.write_text("no markers\n")
    assert report(out, "--summary", summary) == 1 and summary.read_text() == "no markers\n"
    readme.write_text(f"a\n{BEGIN}\nold\n{END}\nb\n")
    (updated,), _ = call("compare.report", ("update_readme", readme, f"{BEGIN}\nnew\n{END}"))
    assert updated
    assert readme.read_text() == f"a\n{BEGIN}\nnew\n{END}\nb\n"


def test_one_pass_models_and_stray_folders_by_tier() -> None:
    tiers, _ = call("compare.cells", *[("cell_tier", m, "long") for m in ("Padim", "Patchcore", "Dfm")],
                    *[("cell_tier", m, "long") for m in ("ssim_ae", "Fastflow", "Cflow", "Stfpm")])  # fmt: skip
    assert tiers[:3] == ["short"] * 3
    assert tiers[3:] == ["long"] * 4  # Stfpm: unknown


# The grid's command, with every cell's process dying by SIGKILL after a line of output, as out of memory does.
KILLED = """
import signal, sys
from benchmarks.compare import runner
from benchmarks.compare.run import main

def killed(command, log, timeout):
    log.write("Epoch 3: 40%|####      | 2/5\\n")
    return -signal.SIGKILL

runner.run_child = killed
sys.exit(main(sys.argv[1:]))
"""


def test_a_cell_that_dies_says_how(tmp_path: Path) -> None:
    """A cell killed before writing its record (out of memory, a signal) is a failure that says so and names its log."""
    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    ran = run_code(KILLED, *GRID, "--out", out, "--data-root", root)
    assert ran.returncode == 1, ran.stderr[-3000:]
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "Padim", 42)
    error = f"killed by signal 9; log {path.with_suffix('.log')}: Epoch 3: 40%|####      | 2/5"
    record = json.loads(path.read_text())
    assert record["error"] == error and record["machine"].endswith(f"Python {platform.python_version()}")
    assert f"FAILED mvtec_ad_grid_mini Padim seed 42: {error}" in ran.stdout

    # --rerun-failed runs it again and keeps the failed record and its log aside: the evidence is not lost
    ran = run_code(KILLED, *GRID, "--out", out, "--data-root", root, "--rerun-failed")
    assert ran.returncode == 1
    assert "seed 42: failed, kept as seed42.json.failed" in ran.stdout
    assert json.loads(path.with_name("seed42.json.failed").read_text())["error"] == error
    assert path.with_name("seed42.log.failed").read_text() == "Epoch 3: 40%|####      | 2/5\n"
    assert json.loads(path.read_text())["error"] == error  # the rerun's own record (killed the same way)
    assert run_code(KILLED, *GRID, "--out", out, "--data-root", root, "--rerun-failed").returncode == 1
    assert path.with_name("seed42.json.failed-2").exists() and path.with_name("seed42.log.failed-2").exists()


RUNNER = """
import sys
from benchmarks.compare.runner import run_child
with open(sys.argv[1], "w") as log:
    run_child([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)"], log, 300)
"""


def test_stopped_runner_stops_its_cell(tmp_path: Path) -> None:
    """SIGTERM to the grid's runner ends the cell's process too: a restarted grid would otherwise train a second copy
    beside the first (before, the cell ran on under init for its whole budget)."""
    log = tmp_path / "cell.log"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(log)], cwd=REPO)  # benchmarks.* from the root
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

    ran = run(*args, "--data-root", root, "--out", out)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
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
    assert run(*more, "--match-steps", "--data-root", root, "--out", out).returncode == 0
    matched = json.loads(cell_path(out, "10s", "mvtec_ad_grid_mini", "ssim_ae", 43).read_text())
    assert matched["steps"] == ours["steps"] and matched["budget"]["max_steps"] == ours["steps"]
    assert matched["budget"]["steps_from"] == f"seed 42, {ours['train_s']} s on {ours['machine']}"
    assert ours["budget"] == {"max_time_s": 10} and peer["budget"] == {"one_pass": True}
    assert report(out, "--tier", "10s") == 0
    table = (out / "10s.md").read_text()
    assert "# Comparison, 10s tier (10 s of training for models that train)" in table
    assert "1 cell(s) of models that train ran for the optimiser steps" in table and "| ssim_ae (2) |" in table


@pytest.mark.slow
def test_a_dataset_of_ones_own(tmp_path: Path) -> None:
    """Any MVTec-layout folder under --data-root can be compared; our variants first ask for its data config."""
    root, out = constructed_dataset(tmp_path / "data", "my_parts"), tmp_path / "compare"
    args = ["--datasets", "my_parts", "--seeds", "42", "--data-root", root, "--out", out]

    for bad in ("data/my_parts", "../my_parts", ".."):  # a cell folder outside cells/<tier>/
        ran = run("--datasets", bad)
        assert ran.returncode == 2  # argparse's exit
        assert f"argument --datasets: {bad!r}: a folder name under --data-root" in ran.stderr
    ran = run("--models", "Padim", "ssim_ae", *args)
    assert ran.returncode == 2  # before any cell runs
    assert "configs/data/my_parts.yaml missing" in ran.stdout and not out.exists()
    assert run("--models", "Padim", *args).returncode == 0
    record = json.loads(cell_path(out, "short", "my_parts", "Padim", 42).read_text())
    assert record["image_AUROC"] == 1.0 and record["pixel_AUROC"] > 0.99  # the squares stand out


# benchmarks/machine.py's provenance of a checkout given as the first argument: commit, code commit, machine.
PROVENANCE = """
import json, sys
from pathlib import Path
from benchmarks import machine

machine.REPO = Path(sys.argv[1])
print(json.dumps([machine.commit(), machine.code_commit(), machine.describe()]))
"""


def provenance(repo: Path, env: dict[str, str] | None = None) -> list[str]:
    ran = run_code(PROVENANCE, repo, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads(ran.stdout.splitlines()[-1])


def test_provenance_marks_new_code_and_survives_without_git(tmp_path: Path) -> None:
    """A new data config is code the cell ran on; and a machine without git or lscpu still runs its cells."""
    repo = tmp_path / "repo"
    (repo / "configs/data").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "c"]):
        subprocess.run(git + command, check=True)
    head, _, _ = provenance(repo)
    (repo / "configs/README.md").write_text("notes\n")  # documentation is not code
    assert len(head) >= 7 and provenance(repo)[1] == head
    (repo / "configs/data/my_parts.yaml").write_text("model: {}\n")  # untracked: git diff alone would miss it
    assert provenance(repo)[1] == head + "+modified"
    _, code, machine = provenance(repo, env={**os.environ, "PATH": str(tmp_path / "empty")})
    assert code == "" and machine.startswith("? · ")


# The grid's command, with every cell's process replaced by a record of 3600 steps; prints the cells' commands
# (model, dataset, seed), whether each had --match-steps, and its time limit, on its last line.
FAKE_CELLS = """
import json, sys
from pathlib import Path
from benchmarks.compare import runner
from benchmarks.compare.cells import cell_path, cell_tier, write_json
from benchmarks.compare.run import main

argv = sys.argv[1:]
out = Path(argv[argv.index("--out") + 1])
commands = []

def fake(command, log, timeout):
    commands.append((command[2:5], "--match-steps" in command, timeout))
    model, dataset, seed = command[2:5]
    write_json(cell_path(out, cell_tier(model, "short"), dataset, model, int(seed)),
               {"dataset": dataset, "tier": "short", "status": "ok", "train_s": 300.0, "model": model,
                "seed": int(seed), "steps": 3600})
    return 0

runner.run_child = fake
code = main(argv)
print(json.dumps([code, commands]))
"""


def test_rerun_starved_and_match_steps(tmp_path: Path) -> None:
    """``--match-steps`` needs a wall-clock cell to take the steps from (one clear error before any cell), passes
    itself to the cells of models that train only; ``--rerun-starved`` keeps the starved record beside the new one."""
    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    ok = {"dataset": "mvtec_ad_grid_mini", "tier": "short", "status": "ok", "train_s": 300.0}
    for seed, steps in ((42, 900), (43, 3600)):
        write_cell(out, {**ok, "model": "ssim_ae", "seed": seed, "steps": steps})
    cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42).with_suffix(".log").write_text(
        "the starved cell's log\n"
    )

    def grid(*args: object) -> tuple[int, list, str]:
        ran = run_code(FAKE_CELLS, *args)
        assert ran.returncode == 0, ran.stderr[-3000:]
        *printed, last = ran.stdout.splitlines()
        code, commands = json.loads(last)
        return code, commands, "\n".join(printed) + "\n" if printed else ""

    args = ["--datasets", "mvtec_ad_grid_mini", "--data-root", root, "--out", out, "--match-steps"]
    code, commands, printed = grid(*args, "--models", "ssim_ae", "Fastflow", "--seeds", "42", "43")
    assert code == 2  # Fastflow has no reference
    assert printed == (
        f"--match-steps: no wall-clock cell in {out / 'cells/short'} to take the steps from for "
        "mvtec_ad_grid_mini/Fastflow; run those without --match-steps first\n"
    )
    assert commands == []
    code, commands, _ = grid(*args, "--models", "ssim_ae", "--seeds", "42", "--hf-cache", tmp_path)
    assert (code, commands) == (0, [])  # ours: from scratch
    code, commands, printed = grid(*args, "--models", "Fastflow", "--seeds", "42", "--hf-cache", tmp_path)
    assert (code, commands) == (2, [])
    assert "mvtec_ad_grid_mini/Fastflow-pretrained; run those" in printed  # its own folder
    code, commands, printed = grid(
        *args, "--models", "ssim_ae", "Padim", "--seeds", "42", "43", "44", "--rerun-starved"
    )
    assert code == 0
    assert commands == [  # seed 42 starved (900 < 0.75 x 3600), 43 kept, 44 new; PaDiM makes one pass: no steps
        [["ssim_ae", "mvtec_ad_grid_mini", "42"], True, 4 * 300 + 1800],
        [["ssim_ae", "mvtec_ad_grid_mini", "44"], True, 4 * 300 + 1800],
        [["Padim", "mvtec_ad_grid_mini", "42"], False, 300 + 1800],
        [["Padim", "mvtec_ad_grid_mini", "43"], False, 300 + 1800],
        [["Padim", "mvtec_ad_grid_mini", "44"], False, 300 + 1800],
    ]
    path = cell_path(out, "short", "mvtec_ad_grid_mini", "ssim_ae", 42)
    assert json.loads(path.with_name("seed42.json.starved").read_text())["steps"] == 900  # nothing lost
    assert json.loads(path.read_text())["steps"] == 3600
    assert "seed 42: starved (900 steps), kept as seed42.json.starved" in printed
    assert path.with_name("seed42.log.starved").read_text() == "the starved cell's log\n"


@pytest.mark.parametrize("command", ["run.py", "job.py", "report.py"])
def test_every_command_prints_its_help(command: str) -> None:
    """``--help`` printed nothing but a traceback for ``run``: a help text's bare ``%`` (from ``{STARVED:.0%}``)
    is a format directive to argparse. Each command's help now prints and names its options."""
    ran = benchmark(f"compare/{command}", "--help")
    assert ran.returncode == 0, ran.stderr[-3000:]
    printed = ran.stdout
    assert printed.startswith("usage: ") and f" {command} " in printed.splitlines()[0] + " "
    if command == "run.py":
        assert "--rerun-starved" in printed
        assert "fewer than 75% of their best sibling's steps" in " ".join(printed.split())


def test_kept_cell_names_the_data_it_ran_on(tmp_path: Path) -> None:
    """A finished cell is kept by its path alone; when it ran on another --data-root, the run says so instead of
    silently passing old results off as the new data's."""
    out, root = tmp_path / "compare", tmp_path / "data"
    (root / "mvtec_ad_grid_mini").mkdir(parents=True)
    record = {"model": "Padim", "dataset": "mvtec_ad_grid_mini", "seed": 42, "tier": "short", "status": "ok"}
    write_cell(out, {**record, "data_root": str(root.resolve())})
    ran = run(*GRID, "--out", out, "--data-root", root)
    assert ran.returncode == 0 and ran.stdout.endswith("seed 42: ok, kept\n")
    write_cell(out, {**record, "data_root": "/elsewhere"})
    ran = run(*GRID, "--out", out, "--data-root", root)
    assert ran.returncode == 0
    assert "seed 42: ok, kept (it ran on /elsewhere: another --out for other data)" in ran.stdout
