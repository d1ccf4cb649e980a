"""Every export path of a checkpoint, side by side: what it keeps (parity with the Lightning model) and what it costs
(ms per image at 1 and 2 threads, file size).

Paths: the torch export, ONNX (ONNX Runtime), OpenVINO f32, FP16, INT8 (weights only), INT8_PTQ and INT8_ACQ (the
network quantised, verified against f32; ``anomalib_ssimae/models/ssim_ae/quantization.py``). Each runs the category's
test images (every one, at its own size; the graphs resize inside) and is compared with the checkpoint's model in
torch: image labels equal, pixel labels equal, largest score change, image AUROC. Timing: one image per call, the
paths in turn for ``--rounds`` rounds over ``--timed`` images (so that a drift of the machine's speed hits them all),
median ms per image; OpenVINO with ``INFERENCE_PRECISION_HINT: f32``, ``PERFORMANCE_HINT: LATENCY`` and
``INFERENCE_NUM_THREADS``, ONNX Runtime and torch with their thread settings.

    python benchmarks/speed/export_paths.py --ckpt results/SsimAe/MVTecAD/bsdata_pitting_mini/v0/weights/lightning/model.ckpt \\
        --data-root datasets --category bsdata_pitting_mini --out benchmarks/results/export_paths.md

The split (``--val-split-ratio``, ``--seed``) must be the training config's: INT8_PTQ/ACQ calibrate on the validation
images (the quickstart config's split is the default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import code_commit, describe

REPO = Path(__file__).resolve().parents[2]
PATHS = ["torch", "onnx", "openvino f32", "FP16", "INT8", "INT8_PTQ", "INT8_ACQ"]


def test_images(root: Path) -> tuple[list[Path], np.ndarray]:
    """All test images of an MVTec-layout category (sorted by folder and name) and their labels (True: defective)."""
    paths = sorted(p for p in (root / "test").rglob("*") if p.suffix.lower() in {".png", ".jpg", ".bmp", ".tif"})
    return paths, np.array([p.parent.name != "good" for p in paths])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    bad, good = scores[labels][:, None], scores[~labels][None, :]
    return float(((bad > good) + 0.5 * (bad == good)).mean())


def size_mib(files: list[Path]) -> float:
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def runners(model: torch.nn.Module, exports: dict[str, Path], threads: int) -> dict:
    """Path -> callable ``(1, 3, H, W) float32 -> (score, label, mask)`` at ``threads`` threads."""
    import onnxruntime as ort
    import openvino as ov

    torch.set_num_threads(threads)
    calls = {}

    def torch_call(module: torch.nn.Module):
        def run(image: np.ndarray) -> tuple:
            with torch.no_grad():
                out = module(torch.from_numpy(image))
            return float(out.pred_score[0]), bool(out.pred_label[0]), out.pred_mask.numpy().reshape(-1).astype(bool)

        return run

    calls["torch"] = torch_call(torch.load(exports["torch"], weights_only=False)["model"].eval())
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(exports["onnx"]), options)
    names = [o.name for o in session.get_outputs()]

    def onnx_run(image: np.ndarray) -> tuple:
        out = dict(zip(names, session.run(None, {"input": image}), strict=True))
        return float(out["pred_score"][0]), bool(out["pred_label"][0]), out["pred_mask"].reshape(-1).astype(bool)

    calls["onnx"] = onnx_run
    core = ov.Core()
    for name in ("openvino f32", "FP16", "INT8", "INT8_PTQ", "INT8_ACQ"):
        if name not in exports:
            continue
        compiled = core.compile_model(
            str(exports[name]),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads},
        )

        def ov_run(image: np.ndarray, compiled: object = compiled) -> tuple:
            out = {k.get_any_name(): v for k, v in compiled(image, share_inputs=False).items()}
            return float(out["pred_score"][0]), bool(out["pred_label"][0]), out["pred_mask"].reshape(-1).astype(bool)

        calls[name] = ov_run
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, default=REPO / "datasets")
    parser.add_argument("--category", default="bsdata_pitting_mini")
    parser.add_argument("--val-split-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timed", type=int, default=8, help="images per round in the timing")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from anomalib.data.utils import read_image
    from anomalib.deploy import CompressionType

    import anomalib_ssimae
    from anomalib_ssimae.data import MVTecAD
    from anomalib_ssimae.models.ssim_ae.checkpoint import checkpoint_class
    from anomalib_ssimae.models.ssim_ae.quantization import QuantizationRefused

    held = checkpoint_class(torch.load(args.ckpt, weights_only=False, map_location="cpu"))
    model = getattr(anomalib_ssimae, held).load_from_checkpoint(args.ckpt, weights_only=False).eval()
    datamodule = MVTecAD(
        root=args.data_root,
        category=args.category,
        val_split_mode="from_test",
        val_split_ratio=args.val_split_ratio,
        seed=args.seed,
        num_workers=0,
        eval_batch_size=8,
    )
    work = Path(tempfile.mkdtemp(prefix="export_paths_"))
    exports, files, notes = {}, {}, {}
    exports["torch"] = model.to_torch(work / "torch")
    files["torch"] = [exports["torch"]]
    exports["onnx"] = model.to_onnx(work / "onnx")
    files["onnx"] = [exports["onnx"], exports["onnx"].with_name(exports["onnx"].name + ".data")]
    for name, compression in (
        ("openvino f32", None),
        ("FP16", CompressionType.FP16),
        ("INT8", CompressionType.INT8),
        ("INT8_PTQ", CompressionType.INT8_PTQ),
        ("INT8_ACQ", CompressionType.INT8_ACQ),
    ):
        started = time.perf_counter()
        try:
            xml = model.to_openvino(work / name.replace(" ", "_"), compression_type=compression, datamodule=datamodule)
        except QuantizationRefused as error:
            notes[name] = f"refused: {error}"
            continue
        exports[name] = xml
        files[name] = [xml, xml.with_suffix(".bin")]
        notes[name] = f"export {time.perf_counter() - started:.0f} s"
    paths, labels = test_images(args.data_root / args.category)
    images = [np.ascontiguousarray(read_image(p, as_tensor=True).numpy()[None], dtype=np.float32) for p in paths]
    with torch.no_grad():
        reference = [model(torch.from_numpy(image)) for image in images]
    ref_scores = np.array([float(r.pred_score[0]) for r in reference])
    ref_labels = np.array([bool(r.pred_label[0]) for r in reference])
    ref_masks = [r.pred_mask.numpy().reshape(-1).astype(bool) for r in reference]
    rows = {}
    for threads in (1, 2):
        calls = runners(model, exports, threads)
        if threads == 1:  # parity (threads do not change the values beyond float noise)
            for name, call in calls.items():
                outs = [call(image) for image in images]
                scores = np.array([o[0] for o in outs])
                masks_equal = np.mean([np.mean(o[2] == m) for o, m in zip(outs, ref_masks, strict=True)])
                rows[name] = {
                    "labels": f"{int(sum(o[1] == r for o, r in zip(outs, ref_labels, strict=True)))}/{len(images)}",
                    "pixels": f"{100 * masks_equal:.2f} %",
                    "score": f"{np.abs(scores - ref_scores).max():.4f}",
                    "auroc": f"{auroc(scores, labels):.3f}",
                }
        timings = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                call(images[0])  # warm
                started = time.perf_counter()
                for image in images[: args.timed]:
                    call(image)
                timings[name].append(1000 * (time.perf_counter() - started) / min(args.timed, len(images)))
        for name, values in timings.items():
            rows[name][f"ms{threads}"] = statistics.median(values)
    base = {t: rows["openvino f32"][f"ms{t}"] for t in (1, 2)}
    lines = [
        "# Export paths: what each keeps and what it costs",
        "",
        (
            f"`python benchmarks/speed/export_paths.py --ckpt <checkpoint> --data-root {args.data_root} --category "
            f"{args.category}` · {date.today()} · {describe()} · commit {code_commit()} · checkpoint {held}, "
            f"{args.ckpt}"
        ),
        "",
        (
            f"Reference: the checkpoint's model in torch (f32) on all {len(images)} test images, each at its own size. "
            f"Image AUROC of the reference: {auroc(ref_scores, labels):.3f}. Timing: median over {args.rounds} rounds of "
            f"{args.timed} images, one image per call, the paths in turn; 'vs f32' is OpenVINO f32's time over the path's."
        ),
        "",
        (
            "| path | image labels equal | pixel labels equal | largest score change | image AUROC | ms/image, 1 thread "
            "| ms/image, 2 threads | vs OpenVINO f32 (1 / 2 threads) | size MiB | note |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in PATHS:
        if name not in rows:
            lines.append(f"| {name} | | | | | | | | | {notes.get(name, '')} |")
            continue
        r = rows[name]
        ratio = f"{base[1] / r['ms1']:.2f}x / {base[2] / r['ms2']:.2f}x"
        lines.append(
            f"| {name} | {r['labels']} | {r['pixels']} | {r['score']} | {r['auroc']} | {r['ms1']:.0f} | "
            f"{r['ms2']:.0f} | {ratio} | {size_mib(files[name]):.1f} | {notes.get(name, '')} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
