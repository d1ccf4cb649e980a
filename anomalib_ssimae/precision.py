"""Training precision from what the machine can do: bf16 autocast only where the CPU has bf16 units.

Measured on 2-core CPUs with torch 2.14.1 (2026-11-29): on an AMD EPYC with AVX512-BF16, bf16 autocast ran the
SSIM-AE training loop about 1.7-2x faster than fp32; on an AVX2-only EPYC it ran about 8x *slower* (no bf16 units,
emulated; ``benchmarks/results/train_throughput.md``). So ``"auto"`` picks bf16 only where ``/proc/cpuinfo`` lists
``avx512_bf16`` or ``amx_bf16`` (or on a CUDA device that supports bf16), and fp32 everywhere else.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "32-true", "bf16-mixed")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def training_precision(precision: str = "auto", device: str = "cpu") -> str:
    """Resolve ``"auto"`` to ``"bf16-mixed"`` or ``"32-true"`` for ``device`` (``"cpu"`` or ``"cuda"``).

    Raises:
        ValueError: for a value outside :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        msg = f"precision must be one of {PRECISIONS}, got {precision!r}"
        raise ValueError(msg)
    if precision != "auto":
        return precision
    if device == "cuda":
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_flags() & set(BF16_CPU_FLAGS) else "32-true"
