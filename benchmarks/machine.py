"""Where a benchmark result comes from: the machine it ran on (CPU model, cores, relevant instruction-set flags,
torch), the commit, and the appending of results files."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _run(*command: str) -> str:
    """A command's output, empty where it cannot run (no git, no lscpu): provenance never stops a benchmark."""
    try:
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def describe() -> str:
    """E.g. ``AMD EPYC · 2 cores · flags ['avx2'] · torch 2.14.1 · Python 3.11.7``."""
    cpu = _run("lscpu")
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "?")
    flags = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if f" {f}" in cpu]
    return (
        f"{model} · {os.cpu_count()} cores · flags {flags} · torch {torch.__version__} · "
        f"Python {platform.python_version()}"
    )


def commit() -> str:
    """The repository's short commit hash (empty outside a git checkout or without git)."""
    return _run("git", "rev-parse", "--short", "HEAD")


def code_commit() -> str:
    """:func:`commit`, marked ``+modified`` when the code (not results or Markdown) differs from it, new files
    included: what a result ran on."""
    changed = _run("git", "status", "--porcelain", "--", "anomalib_ssimae", "benchmarks", "configs", "pyproject.toml",
                   ":(exclude)benchmarks/results", ":(exclude)*.md")  # fmt: skip
    return commit() + ("+modified" if changed else "")


def versions() -> str:
    """E.g. ``anomalib-ssimae 0.3.0, anomalib 2.7.0, lightning 2.6.6``."""
    import importlib.metadata

    import anomalib_ssimae  # its own version: an editable install's metadata keeps the version it was installed at

    return ", ".join(
        [f"anomalib-ssimae {anomalib_ssimae.__version__}"]
        + [f"{name} {importlib.metadata.version(name)}" for name in ("anomalib", "lightning")]
    )


def checkpoint_stamp(checkpoint: Path, data_root: Path, name: str | None) -> dict[str, str]:
    """The provenance columns of a CSV row about one checkpoint scored on one dataset folder; ``name`` defaults to
    the checkpoint's folder."""
    return {
        "date": date.today().isoformat(),
        "commit": commit(),
        "machine": describe(),
        "dataset": data_root.name,
        "run": name or checkpoint.parent.name,
        "checkpoint": checkpoint.name,
    }


def append_markdown(path: Path, title: str, lines: list[str]) -> None:
    """Append ``lines`` (a section) to the Markdown results file ``path``, starting it with ``# title`` if new."""
    if not path.exists():
        path.write_text(f"# {title}\n")
    with path.open("a") as handle:
        handle.write("\n".join(lines))
