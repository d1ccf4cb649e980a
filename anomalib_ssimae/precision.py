"""Training precision from what the machine can do: bf16 autocast only where the CPU has bf16 units.

Measured on 2-core CPUs with torch 2.14.1 (2026-11-29): on an AMD EPYC with AVX512-BF16, bf16 autocast ran the
SSIM-AE training loop about 1.7-2x faster than fp32; on an AVX2-only EPYC it ran about 8x *slower* (no bf16 units,
emulated; ``benchmarks/results/train_throughput.md``). So ``"auto"`` picks bf16 only where ``/proc/cpuinfo`` lists
``avx512_bf16`` or ``amx_bf16`` (or on a CUDA device with bf16 units: compute capability 8.0 and up, A100, H100,
RTX 30xx on; not T4 or V100, where torch would emulate it), and fp32 everywhere else.

What scores images runs in full fp32 on a GPU too (:func:`full_fp32`): torch's default runs fp32 convolutions on
Ampere and newer GPUs in TF32 (10-bit mantissa), which moves maps and scores by about 1e-3 relative against the CPU
and the exported graph, and the SSIM statistics cancel where the image is flat (:mod:`~anomalib_ssimae.components.ssim`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
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
        # including_emulation=False: bf16 units, not bf16 emulated in fp32 (T4, V100; as on AVX2 CPUs, slower)
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bf16-mixed" if supported else "32-true"
    return "bf16-mixed" if cpu_flags() & set(BF16_CPU_FLAGS) else "32-true"


@contextlib.contextmanager
def full_fp32(device_type: str) -> Iterator[None]:
    """Within the block, fp32 convolutions and matrix products on a CUDA device are IEEE fp32, not TF32; the
    settings the user had come back after it. A no-op elsewhere (CPUs have no TF32).

    torch 2.14 runs fp32 cuDNN convolutions in TF32 by default, and matrix products too after
    ``torch.set_float32_matmul_precision("high")`` (which Lightning suggests on such GPUs). The anomaly maps,
    scores and thresholds, and the SSIM loss's statistics, need fp32 to agree with the CPU and the exported graph.
    """
    if device_type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved
