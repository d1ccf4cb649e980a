"""Where the fp32 training step's time goes, how near it is to the CPU's fp32 ceiling, and what equivalent
formulations of the stride-2 layers give (issue 29). One process, side by side, medians of interleaved repeats.

1. Sections of the package's own step inside ``Engine.fit`` (embedded data, batch 16, fp32): crop sampling, network
   forward, loss, backward, guards, Adam, logging; the rest is Lightning's loop.
2. The network's forward + backward (batch 16, channels-last, fp32) in GFLOP/s (``torch.utils.flop_counter``)
   against a large compute-bound fp32 convolution on the same threads: the share of the ceiling it already reaches.
3. Bare steps at batch 16: the authors'-style step (pytorch-msssim SSIM loss, default layout), today's step (the
   package's SSIM loss, channels-last) and a candidate with the same function: each 4 x 4 stride-2 convolution as
   space-to-depth + 2 x 2 convolution, each 4 x 4 stride-2 transposed convolution as 2 x 2 convolution +
   depth-to-space (the same weights, maps equal to float rounding).

To see an AVX2-only CPU's code paths on an AVX-512 one (oneDNN, ATen and MKL kernels; not its clock or caches)::

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/speed/step_profile.py

    python benchmarks/speed/step_profile.py [--repeats 20] [--out benchmarks/results/step_profile.md]

Appends a section to the result file (machine, CPU flags, ISA limits, date, commit). Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss
from anomalib_ssimae.models.ssim_ae.network import SSIM_AE_EXTENDED_ENCODER, SsimAeNetwork
from benchmarks.machine import code_commit, describe

REPO = Path(__file__).resolve().parents[2]
BATCH = 16
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def network(name: str) -> SsimAeNetwork:
    torch.manual_seed(0)
    if name == "extended":
        return SsimAeNetwork(1, 100, encoder=SSIM_AE_EXTENDED_ENCODER, output_kernel=4)
    return SsimAeNetwork(1, 100)


# ---------------------------------------------------------------- equivalent formulations (same weights)
def space_to_depth_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``Conv2d(k=4, s=2, p=1)`` as pad 1 + pixel_unshuffle(2) + 2 x 2 convolution of 4 x the input channels."""
    out_c, in_c = conv.weight.shape[:2]
    weight = conv.weight.view(out_c, in_c, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(out_c, in_c * 4, 2, 2)
    return F.conv2d(F.pixel_unshuffle(F.pad(x, (1, 1, 1, 1)), 2), weight, conv.bias)


def depth_to_space_transposed(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``ConvTranspose2d(k=4, s=2, p=1)`` as 2 x 2 convolution (padding 1) to 4 x the output channels,
    pixel_shuffle(2), then a 1-pixel crop: the adjoint of :func:`space_to_depth_conv`."""
    in_c, out_c = conv.weight.shape[:2]
    weight = conv.weight.view(in_c, out_c, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(in_c, out_c * 4, 2, 2)
    bias = conv.bias.repeat_interleave(4) if conv.bias is not None else None
    y = F.conv2d(x, weight.flip(2, 3).transpose(0, 1), bias, padding=1)
    return F.pixel_shuffle(y, 2)[..., 1:-1, 1:-1]


def with_equivalent_layers(net: SsimAeNetwork) -> SsimAeNetwork:
    """Route every 4 x 4 stride-2 (transposed) convolution of ``net`` through the formulations above."""
    for module in net.modules():
        if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            continue
        if (module.kernel_size, module.stride, module.padding) != ((4, 4), (2, 2), (1, 1)):
            continue
        if isinstance(module, nn.ConvTranspose2d):
            module.forward = lambda x, m=module: depth_to_space_transposed(m, x)
        else:
            module.forward = lambda x, m=module: space_to_depth_conv(m, x)
    return net


# ---------------------------------------------------------------- measurements
def interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each step, run in turn (A B C A B C ...) after two warm-ups each."""
    for step in steps.values():
        step()
        step()
    times = collections.defaultdict(list)
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def bare_step(net: SsimAeNetwork, loss: Callable, channels_last: bool) -> Callable[[], None]:
    """One Adam step of ``net`` on a fixed random batch of 16 crops, 1 x 128 x 128, fp32."""
    crops = torch.rand(BATCH, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        crops = crops.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad()
        loss(crops, net(crops)).backward()
        optimizer.step()

    return step


def authors_loss() -> Callable:
    from pytorch_msssim import ssim

    return lambda x, y: 1 - ssim(x, y, data_range=1.0, size_average=True, win_size=11)


def ceiling_gflops(repeats: int = 5) -> float:
    """fp32 GFLOP/s of a large, compute-bound convolution (3 x 3, 256 -> 256 channels, 32 x 32, batch 16, forward,
    channels-last): what oneDNN reaches at best on these threads. Not a matrix product: torch's CPU matmul goes
    through MKL, which on AMD CPUs ran below the convolutions (190 against 247 GFLOP/s on the AVX-512 EPYC)."""
    conv = nn.Conv2d(256, 256, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(BATCH, 256, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        conv(x)
        best = min(timed(lambda: conv(x)) for _ in range(repeats))
    return 2 * BATCH * 32 * 32 * 256 * 256 * 9 / best / 1e9


def timed(fn: Callable) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(net: SsimAeNetwork) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        net(torch.rand(BATCH, 1, 128, 128)).mean().backward()
    net.zero_grad()
    return counter.get_total_flops()


def engine_sections(steps: int = 120) -> tuple[float, dict[str, float]]:
    """Median interval between optimiser steps of ``Engine.fit`` (ms) and the median of each section (ms)."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    from anomalib_ssimae import SsimAe

    spent = collections.defaultdict(list)

    def timing(name: str, fn: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            spent[name].append(time.perf_counter() - start)
            return result

        return wrapper

    model = SsimAe(image_size=[208, 512], crops_per_epoch=BATCH * steps, batch_size=BATCH, visualizer=False,
                   train_precision="32-true", lr_schedule="cosine", warmup_crops=160, learning_rate=1e-3)  # fmt: skip
    model.crop_sampler = timing("crop sampling", model.crop_sampler)
    model.model.network.forward = timing("network forward", model.model.network.forward)
    model.loss.forward = timing("loss forward", model.loss.forward)
    model.manual_backward = timing("backward (network and loss)", model.manual_backward)
    model.guards.check_collapse = timing("guards (collapse, gradient norm)", model.guards.check_collapse)
    model.log = timing("logging (2 calls)", model.log)
    adam_step = torch.optim.Adam.step
    ends = []

    def step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        result = adam_step(self, *args, **kwargs)
        spent["Adam"].append(time.perf_counter() - start)
        ends.append(time.perf_counter())
        return result

    torch.optim.Adam.step = step
    try:
        datamodule = MVTecAD(root=REPO / "datasets", category="bsdata_pitting_mini", train_batch_size=40, num_workers=0)
        with tempfile.TemporaryDirectory() as folder:
            Engine(accelerator="cpu", devices=1, logger=False, max_epochs=1, limit_val_batches=0,
                   enable_progress_bar=False, default_root_dir=folder).fit(model, datamodule=datamodule)  # fmt: skip
    finally:
        torch.optim.Adam.step = adam_step
    skip = 20  # kernel selection and warm-up
    interval = statistics.median(b - a for a, b in zip(ends[skip:], ends[skip + 1 :], strict=False)) * 1e3
    factor = {"logging (2 calls)": 2}
    return interval, {k: statistics.median(v[skip:]) * 1e3 * factor.get(k, 1) for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "step_profile.md")
    args = parser.parse_args()
    limits = ", ".join(f"{k}={os.environ[k]}" for k in ISA_LIMITS if k in os.environ) or "none (native)"
    lines = [(f"## {date.today()} · {describe()} · {torch.get_num_threads()} threads · ISA limits: {limits} · "
             f"commit {code_commit()}"), ""]  # fmt: skip

    interval, sections = engine_sections()
    lines += [(f"### 1. SSIM-AE step inside `Engine.fit`, batch {BATCH}, fp32: {interval:.1f} ms "
              f"({BATCH / interval * 1e3:.0f} crops/s)"), "", "| section | ms | share |", "|---|---|---|"]  # fmt: skip
    for name, ms in sections.items():
        lines.append(f"| {name} | {ms:.2f} | {ms / interval:.1%} |")
    rest = interval - sum(sections.values())
    lines += [f"| rest (Lightning's loop, schedule, zero_grad) | {rest:.2f} | {rest / interval:.1%} |", ""]

    peak = ceiling_gflops()
    lines += [(f"### 2. Network forward + backward + Adam, batch {BATCH}, channels-last, fp32, against the fp32 "
              f"ceiling (a 3 x 3 convolution, 256 -> 256 channels, 32 x 32, batch 16: {peak:.0f} GFLOP/s)"), "",
              "| network | GFLOP per step | ms | GFLOP/s | share of the ceiling |", "|---|---|---|---|---|"]  # fmt: skip
    for name in ("ssim_ae", "extended"):
        flops = step_flops(network(name)) / 1e9
        ms = interleaved({name: bare_step(network(name), lambda x, y: y.mean(), True)}, args.repeats // 2)[name]
        lines.append(f"| {name} | {flops:.2f} | {ms:.1f} | {flops / ms * 1e3:.0f} | {flops / ms * 1e3 / peak:.0%} |")

    loss = ReconstructionLoss("ssim")
    candidates = {
        "authors'-style (pytorch-msssim SSIM, default layout)": bare_step(network("ssim_ae"), authors_loss(), False),
        "today (package SSIM, channels-last)": bare_step(network("ssim_ae"), loss, True),
        "candidate: stride-2 layers as space-to-depth / depth-to-space": bare_step(
            with_equivalent_layers(network("ssim_ae")), loss, True
        ),
    }
    check = network("ssim_ae").eval()
    patches = torch.rand(4, 1, 128, 128)
    difference = (check(patches) - with_equivalent_layers(network("ssim_ae")).eval()(patches)).abs().max()
    ms = interleaved(candidates, args.repeats)
    today = ms["today (package SSIM, channels-last)"]
    lines += ["", f"### 3. Bare SSIM-AE steps, batch {BATCH}, fp32, interleaved (median of {args.repeats})", "",
              "| step | ms | crops/s | vs today |", "|---|---|---|---|"]  # fmt: skip
    for name, value in ms.items():
        lines.append(f"| {name} | {value:.1f} | {BATCH / value * 1e3:.0f} | {today / value:.2f}x |")
    lines += ["", f"The candidate's reconstruction differs from today's network by at most {difference:.1e}.", "", ""]

    text = "\n".join(lines)
    print(text)
    header = "# fp32 training step: profile, ceiling, equivalent formulations (`benchmarks/speed/step_profile.py`)\n\n"
    previous = args.out.read_text() if args.out.exists() else header
    temporary = args.out.with_suffix(".tmp")
    temporary.write_text(previous + text)
    temporary.replace(args.out)


if __name__ == "__main__":
    main()
