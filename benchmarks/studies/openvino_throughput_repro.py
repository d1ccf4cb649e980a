"""Minimal reproduction: does OpenVINO's THROUGHPUT hint (several CPU streams) change outputs, and why?

No code of this package: the graphs are built with ``openvino.opset15`` (OpenVINO and NumPy only), and a float64
NumPy evaluation of each graph is the ground truth. Every graph takes ``input`` float32 ``(N, 3, H, W)`` with N, H, W
dynamic, resizes it inside as the exported SSIM-AE graphs do (``Interpolate`` v11, ``linear_onnx``, ``half_pixel``,
``antialias=false``, sizes ``(N, 3, 128, 256)`` from the input's ``ShapeOf``), then three 3 x 3 ``Convolution`` +
``PReLU`` and a ``Sigmoid`` give the map ``(N, 1, 128, 256)``, whose ``ReduceMax`` is the score ``(N,)``. Graphs:

* ``resize``: just that;
* ``resize-stitch``: the map is also cut into three overlapping 128 x 128 patches (``Slice``) and stitched back with
  ``Col2Im`` divided by ``Col2Im`` of a constant of ones, the overlap count, as torch's exporter writes
  ``F.fold(x) / F.fold(ones)`` (the package's ``PatchTiler.untile``): in exact arithmetic the same map;
* ``resize-stitch-constant``: the same, with the overlap count as a precomputed ``Constant``.

Both compilations use ``INFERENCE_PRECISION_HINT: f32``. LATENCY (one stream; one synchronous request, one image at a
time) is the reference. Each way below runs in a fresh process (one way's misuse of inputs must not leak into the
next) and is compared with it, bit for bit, in every repeat:

* ``LATENCY again``: the reference run again (LATENCY is deterministic);
* ``queue``: THROUGHPUT, an ``AsyncInferQueue`` of ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``, inputs copied into the
  requests (``share_inputs=False``, as ``OpenVinoDetector.imap`` does), outputs copied in the callback;
* ``queue-shared``: the same with ``share_inputs=True`` (the requests read the caller's arrays), all kept alive;
* ``requests``: THROUGHPUT, that many separate ``InferRequest`` objects, started together and waited on;
* ``one-at-a-time``: THROUGHPUT, one synchronous request (no concurrency at all);
* ``LATENCY+2-streams`` / ``THROUGHPUT+1-stream``: the hints with ``NUM_STREAMS`` overridden, run as ``queue``;
* ``static-batch``: THROUGHPUT of the model reshaped to a static input ``(1, 3, H, W)``, run as ``queue``;

and, on the LATENCY compilation (one stream) with two requests in flight, as the package runs it, four ways that
misuse input buffers: ``after-call`` (``compiled(images[-1])``, i.e. ``CompiledModel.__call__`` with its default
``share_inputs=True``, as ``OpenVinoDetector.__call__`` does, then ``queue``), ``after-shared`` (a ``queue-shared`` run,
then ``queue``), ``dropped`` (``share_inputs=True`` on a temporary copy of each input that nothing references: freed
before its request finishes) and ``overwritten`` (``share_inputs=True`` on ONE buffer refilled right after each
start). A crash is reported as such.

Inputs: ``--images`` random images of 208 x 512 (resized by the graph) and of 128 x 256 (the graph's own size).
Prints OpenVINO's version, the CPU and its flags, and per way the streams and requests, the largest difference
against LATENCY (each repeat; 0 = bit-identical), the largest error against NumPy float64 and how many images were
off by more than 1e-4 (f32 rounding gives about 1e-6). About 40 s on 2 cores with the defaults.

    python benchmarks/studies/openvino_throughput_repro.py [--images 8] [--repeats 5] [--graph GRAPH ...] [--way WAY ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino import opset15 as ops

SIZE = (128, 256)  # what the graph resizes to (height, width)
PATCH, STEP = 128, 64  # the stitched patches: 3 columns of 128 x 128 at 0, 64, 128 over 128 x 256
PRELU = 0.25
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
GRAPHS = ("resize", "resize-stitch", "resize-stitch-constant")
WRONG = 1e-4  # an f32 result further than this from the float64 truth is wrong (rounding gives about 1e-6)

Outputs = list[dict[str, np.ndarray]]


def cpu() -> tuple[str, str]:
    """(model name, flags) from /proc/cpuinfo; ("?", "?") elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "?", "?"
    field = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines if ":" in line}
    return field.get("model name", "?"), field.get("flags", "?")


def make_weights(seed: int = 0) -> list[np.ndarray]:
    """He-initialised 3 x 3 convolution weights ``(out, in, 3, 3)`` float32: 3 -> 16 -> 16 -> 1 channels."""
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0, (2 / (9 * channels_in)) ** 0.5, (channels_out, channels_in, 3, 3)).astype(np.float32)
        for channels_in, channels_out in ((3, 16), (16, 16), (16, 1))
    ]


def i64(*values: int) -> ov.Node:
    return ops.constant(np.array(values, np.int64))


def overlap_count() -> np.ndarray:
    """``(1, 1, 128, 256)`` float32: how many of the stitched patches cover each pixel (1, 2, 2, 1 per 64 columns)."""
    count = np.zeros((1, 1, *SIZE), np.float32)
    for left in range(0, SIZE[1] - PATCH + 1, STEP):
        count[..., left : left + PATCH] += 1
    return count


def build_model(weights: list[np.ndarray], graph: str) -> ov.Model:
    """One of :data:`GRAPHS` (module docstring)."""
    image = ops.parameter(ov.PartialShape([-1, 3, -1, -1]), ov.Type.f32, name="input")
    sizes = ops.concat([ops.gather(ops.shape_of(image), i64(0, 1), ops.constant(0)), i64(*SIZE)], 0)
    x = ops.interpolate(
        image, sizes, mode="linear_onnx", shape_calculation_mode="sizes", coordinate_transformation_mode="half_pixel",
        nearest_mode="floor", antialias=False, pads_begin=[0, 0, 0, 0], pads_end=[0, 0, 0, 0],
    )  # fmt: skip
    for kernel in weights:
        x = ops.convolution(x, ops.constant(kernel), [1, 1], [1, 1], [1, 1], [1, 1])
        if len(kernel) > 1:
            x = ops.prelu(x, ops.constant(np.full(len(kernel), PRELU, np.float32)))
    x = ops.sigmoid(x)
    if graph != "resize":  # cut into 3 overlapping patch columns (N, 128 * 128, 3), stitch back, average
        starts = range(0, SIZE[1] - PATCH + 1, STEP)
        patches = [
            ops.reshape(ops.slice(x, i64(left), i64(left + PATCH), i64(1), i64(3)), i64(0, PATCH * PATCH, 1), True)
            for left in starts
        ]
        fold = {"output_size": i64(*SIZE), "kernel_size": i64(PATCH, PATCH), "strides": [STEP, STEP],
                "dilations": [1, 1], "pads_begin": [0, 0], "pads_end": [0, 0]}  # fmt: skip
        if graph == "resize-stitch":
            ones = ops.constant(np.ones((1, PATCH * PATCH, len(starts)), np.float32))
            count = ops.col2im(ones, **fold)
        else:
            count = ops.constant(overlap_count())
        x = ops.divide(ops.col2im(ops.concat(patches, 2), **fold), count)
    score = ops.reduce_max(ops.reshape(x, i64(0, -1), True), 1, False)
    x.output(0).get_tensor().set_names({"anomaly_map"})
    score.output(0).get_tensor().set_names({"pred_score"})
    return ov.Model([ops.result(x), ops.result(score)], [image], graph)


def resize_axis(image: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear resize of one axis as ONNX ``linear`` with ``half_pixel`` and no antialiasing (coordinates clamped)."""
    length = image.shape[axis]
    source = np.clip((np.arange(size) + 0.5) * (length / size) - 0.5, 0, length - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, length - 1)
    weight = (source - low).reshape([-1 if a == axis else 1 for a in range(image.ndim)])
    return np.take(image, low, axis) * (1 - weight) + np.take(image, high, axis) * weight


def numpy_model(weights: list[np.ndarray], image: np.ndarray) -> dict[str, np.ndarray]:
    """Every graph evaluated in float64 with NumPy (the stitching averages equal values: the identity)."""
    x = resize_axis(resize_axis(image.astype(np.float64), 2, SIZE[0]), 3, SIZE[1])
    for kernel in weights:
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        x = sum(
            np.einsum("oi,nihw->nohw", kernel[:, :, dy, dx].astype(np.float64),
                      padded[:, :, dy : dy + SIZE[0], dx : dx + SIZE[1]])
            for dy in range(3) for dx in range(3)
        )  # fmt: skip
        if len(kernel) > 1:
            x = np.where(x > 0, x, PRELU * x)
    anomaly_map = 1 / (1 + np.exp(-x))
    return {"anomaly_map": anomaly_map, "pred_score": anomaly_map.reshape(len(x), -1).max(axis=1)}


def copy_results(request: ov.InferRequest) -> dict[str, np.ndarray]:
    """Every output of a finished request, copied (the request's buffers are reused by its next inference)."""
    return {port.get_any_name(): np.array(value, copy=True) for port, value in request.results.items()}


def one_at_a_time(compiled: ov.CompiledModel, images: list[np.ndarray]) -> Outputs:
    request = compiled.create_infer_request()
    outputs = []
    for image in images:
        request.infer({0: image})
        outputs.append(copy_results(request))
    return outputs


def queue(
    compiled: ov.CompiledModel, images: list[np.ndarray], inputs: str = "copied", jobs: int | None = None
) -> Outputs:
    """An ``AsyncInferQueue`` of ``jobs`` requests (default ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``); ``inputs``:
    ``copied`` (share_inputs=False), ``shared`` (True, the arrays kept alive), ``dropped`` (True, a temporary copy
    referenced by nothing else), ``overwritten`` (True, one buffer refilled right after each start): the last two
    are the caller's errors, for the controls."""
    infer_queue = ov.AsyncInferQueue(compiled, jobs or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    outputs: dict[int, dict[str, np.ndarray]] = {}
    infer_queue.set_callback(lambda request, index: outputs.__setitem__(index, copy_results(request)))
    buffer = np.empty_like(images[0])
    for index, image in enumerate(images):
        if inputs == "copied":
            infer_queue.start_async({0: image}, userdata=index, share_inputs=False)
        elif inputs == "shared":
            infer_queue.start_async({0: image}, userdata=index, share_inputs=True)
        elif inputs == "dropped":
            infer_queue.start_async({0: image.copy()}, userdata=index, share_inputs=True)
        else:
            np.copyto(buffer, image)  # may overwrite what a running request still reads
            infer_queue.start_async({0: buffer}, userdata=index, share_inputs=True)
    infer_queue.wait_all()
    return [outputs[i] for i in range(len(images))]


def requests(compiled: ov.CompiledModel, images: list[np.ndarray]) -> Outputs:
    """``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` separate requests, started together and waited on, batch after batch."""
    pool = [compiled.create_infer_request() for _ in range(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))]
    outputs = []
    for first in range(0, len(images), len(pool)):
        started = list(zip(pool, images[first : first + len(pool)], strict=False))
        for request, image in started:
            request.start_async({0: image})
        for request, _ in started:
            request.wait()
        outputs.extend(copy_results(request) for request, _ in started)
    return outputs


def largest_difference(reference: Outputs, outputs: Outputs) -> float:
    """Largest absolute difference over both outputs and all images (0.0: bit-identical)."""
    return max(
        float(np.abs(r[name].astype(np.float64) - o[name].reshape(r[name].shape).astype(np.float64)).max())
        for r, o in zip(reference, outputs, strict=True)
        for name in r
    )


def wrong_images(truth: Outputs, outputs: Outputs) -> int:
    """How many images have an output further than :data:`WRONG` from the truth."""
    return sum(largest_difference([t], [o]) > WRONG for t, o in zip(truth, outputs, strict=True))


WAYS = {  # way: (compilation, how it is run); module docstring
    "LATENCY again": ("LATENCY", "one-at-a-time"),
    "queue": ("THROUGHPUT", "queue"),
    "queue-shared": ("THROUGHPUT", "queue-shared"),
    "requests": ("THROUGHPUT", "requests"),
    "one-at-a-time": ("THROUGHPUT", "one-at-a-time"),
    "LATENCY+2-streams": ("LATENCY+2-streams", "queue"),
    "THROUGHPUT+1-stream": ("THROUGHPUT+1-stream", "queue"),
    "static-batch": ("THROUGHPUT static", "queue"),
    "after-call": ("LATENCY", "after-call"),  # the package's compilation, two requests in flight
    "after-shared": ("LATENCY", "after-shared"),
    "dropped": ("LATENCY", "dropped"),
    "overwritten": ("LATENCY", "overwritten"),
}
OPTIONS = {
    "LATENCY": {"PERFORMANCE_HINT": "LATENCY"},
    "THROUGHPUT": {"PERFORMANCE_HINT": "THROUGHPUT"},
    "THROUGHPUT static": {"PERFORMANCE_HINT": "THROUGHPUT"},
    "LATENCY+2-streams": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 2},
    "THROUGHPUT+1-stream": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 1},
}


def run(compiled: ov.CompiledModel, how: str, images: list[np.ndarray]) -> Outputs:
    """``images`` through ``compiled`` as ``how`` says (:data:`WAYS`)."""
    if how == "one-at-a-time":
        return one_at_a_time(compiled, images)
    if how == "requests":
        return requests(compiled, images)
    if how == "after-call":  # CompiledModel.__call__ (share_inputs=True by default), then the measured copied run
        compiled(images[-1])
        return queue(compiled, images, jobs=2)
    if how == "after-shared":  # a share_inputs=True run (inputs alive throughout), then the measured copied run
        queue(compiled, images, "shared", jobs=2)
        return queue(compiled, images, jobs=2)
    if how in ("dropped", "overwritten"):
        return queue(compiled, images, how, jobs=2)
    return queue(compiled, images, "shared" if how == "queue-shared" else "copied")


def child(graph: str, way: str, count: int, repeats: int) -> None:
    """One way on one graph in this (fresh) process, printed as one JSON line: per input size, the largest
    difference against LATENCY of each repeat, the largest error against NumPy and the most wrong images."""
    weights, core = make_weights(), ov.Core()
    model = build_model(weights, graph)
    latency = core.compile_model(model, "CPU", F32 | OPTIONS["LATENCY"])
    compilation, how = WAYS[way]
    rng = np.random.default_rng(1)
    result: dict[str, Any] = {}
    for height, width in ((208, 512), SIZE):
        images = [rng.random((1, 3, height, width), dtype=np.float32) for _ in range(count)]
        truth = [numpy_model(weights, image) for image in images]
        reference = one_at_a_time(latency, images)
        tested = model
        if compilation.endswith("static"):
            tested = model.clone()
            tested.reshape({0: ov.PartialShape([1, 3, height, width])})
        compiled = latency if way == "LATENCY again" else core.compile_model(tested, "CPU", F32 | OPTIONS[compilation])
        differences, errors, wrong = [], [], 0
        for _ in range(repeats):
            outputs = run(compiled, how, images)
            differences.append(largest_difference(reference, outputs))
            errors.append(largest_difference(truth, outputs))
            wrong = max(wrong, wrong_images(truth, outputs))
        result[f"{height}x{width}"] = {
            "latency_error": largest_difference(truth, reference),
            "streams": compiled.get_property("NUM_STREAMS"),
            "requests": compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
            "differences": differences,
            "error": max(errors),
            "wrong": wrong,
        }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--graph", nargs="+", choices=GRAPHS, default=list(GRAPHS))
    parser.add_argument("--way", nargs="+", choices=list(WAYS), default=list(WAYS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # GRAPH WAY: run one way in this process
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.images, args.repeats)
        return
    started = time.perf_counter()
    model_name, flags = cpu()
    print(f"OpenVINO {ov.__version__} · Python {platform.python_version()} · NumPy {np.__version__}")
    print(f"CPU: {model_name} · {os.cpu_count()} logical CPUs · flags: {flags}")
    print(f"{args.images} random images per input size, {args.repeats} repeats; each way in a fresh process")
    summary = []
    for graph in args.graph:
        print(f"\n### graph {graph}")
        header = (
            f"  {'way':<20}{'input':<9}{'streams/requests':<18}{'against LATENCY, each repeat':<{10 * args.repeats}}"
        )
        print(header + "  against NumPy  wrong images")
        for way in args.way:
            command = [sys.executable, __file__, "--child", graph, way]
            command += ["--images", str(args.images), "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
            if done.returncode != 0:
                said = (done.stderr.strip().splitlines() or ["(nothing)"])[-1][:120]
                print(f"  {way:<20}crashed: exit {done.returncode}: {said}")
                summary.append((graph, way, "crashed"))
                continue
            for size, row in json.loads(done.stdout.strip().splitlines()[-1]).items():
                cells = "".join(f"{d:<10.3g}" for d in row["differences"])
                streams = f"{row['streams']}/{row['requests'] if WAYS[way][1] not in OWN_JOBS else 2}"
                print(
                    f"  {way:<20}{size:<9}{streams:<18}{cells}  {row['error']:<13.3g}  {row['wrong']} of "
                    f"{args.images}   (LATENCY against NumPy {row['latency_error']:.2g})"
                )
                summary.append((graph, f"{way} @ {size}", max(row["differences"])))
    print("\nlargest difference against LATENCY (0 = bit-identical), where not 0:")
    for graph in args.graph:
        changed = [f"{way} {value}" if isinstance(value, str) else f"{way} {value:.3g}"
                   for g, way, value in summary if g == graph and value != 0]  # fmt: skip
        print(f"  {graph}: " + (", ".join(changed) or "all bit-identical"))
    print(f"{time.perf_counter() - started:.1f} s")


OWN_JOBS = (
    "after-call",
    "after-shared",
    "dropped",
    "overwritten",
)  # run with two requests in flight whatever the compilation


if __name__ == "__main__":
    main()
