"""One line naming the machine a benchmark ran on (CPU model, cores, relevant instruction-set flags, torch)."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def describe() -> str:
    """E.g. ``AMD EPYC · 2 cores · flags ['avx2'] · torch 2.14.1 · Python 3.11.7``."""
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "?")
    flags = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if f" {f}" in cpu]
    return (
        f"{model} · {os.cpu_count()} cores · flags {flags} · torch {torch.__version__} · "
        f"Python {platform.python_version()}"
    )
