"""INT8 post-training quantisation of an exported SSIM-AE graph: the network only, verified against f32.

anomalib's ``--compression_type INT8_PTQ`` / ``INT8_ACQ`` hand the whole exported graph to NNCF, which then also
quantises the resize, tiling, stitching, SSIM, Gaussian smoothing, normalisation and threshold arithmetic; on the
README's main job that model scored every image alike (image AUROC 0.500 against 0.885, labels equal to the f32
export on 8 of 28 images) and exited 0. As the field quantises reconstruction models, only the autoencoder's
convolutions (:class:`~anomalib_ssimae.models.ssim_ae.network.SsimAeNetwork`: the encoder and decoder layers of
Bergmann et al. 2019, Table 1, or Rádli & Czúni 2021, Table 2) get INT8 weights and activations here; everything
around them stays f32. NNCF calibrates on the datamodule's validation images, each of which gives the network all
its patches (a 512 x 208 image at stride 32 gives about 100).

Every INT8_PTQ/INT8_ACQ export is then compared with the f32 graph on the datamodule's validation and test images
(:func:`label_agreement`); below :data:`MIN_IMAGE_AGREEMENT` of equal image labels or :data:`MIN_PIXEL_AGREEMENT` of
equal pixel labels the export is refused (:class:`QuantizationRefused`) before anything is written. INT8_ACQ
optimises that same agreement (NNCF's ``quantize_with_accuracy_control`` with the agreement as its metric: the f32
graph scores 1.0, and a drop of ``max_drop`` is a fraction of labels changed), not anomalib's default F1 of image
labels, which had reported an "accuracy drop" of -0.138 for the ruined model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MIN_IMAGE_AGREEMENT = 0.95  # at most 1 image label in 20 may flip (1 of the embedded data's 28 images)
MIN_PIXEL_AGREEMENT = 0.99  # at most 1 pixel label in 100 may flip
CONVOLUTIONS = ("Convolution", "ConvolutionBackpropData")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO runs f32 graphs in bf16 on CPUs with bf16 units otherwise


class QuantizationRefused(RuntimeError):
    """The INT8 model would not keep the f32 export's labels (or the network could not be found in the graph)."""


def network_nodes(model: Any) -> list[str]:
    """Friendly names of the OpenVINO ops of the autoencoder inside an exported SSIM-AE graph: every op on a path
    from its first convolution to its output ``Sigmoid`` (the graph's only Sigmoid), both included.

    The exporter names ops by type and number (``node_Conv_277``), not by module, so the network is found by
    structure: the Gaussian smoothing of the anomaly map is also a ``Convolution``, but it lies after the Sigmoid.

    Raises:
        QuantizationRefused: when the graph has no single Sigmoid fed by convolutions.
    """
    ops = list(model.get_ordered_ops())
    sigmoids = [op for op in ops if op.get_type_name() == "Sigmoid"]
    if len(sigmoids) != 1:
        msg = f"expected one Sigmoid (the network's output) in the exported graph, found {len(sigmoids)}"
        raise QuantizationRefused(msg)
    ancestors = _ancestors(sigmoids[0])
    convolutions = [op for op in ops if op.get_type_name() in CONVOLUTIONS and _key(op) in ancestors]
    if not convolutions:
        msg = "no convolution feeds the network's output Sigmoid in the exported graph"
        raise QuantizationRefused(msg)
    first = next(op for op in convolutions if not any(_key(c) in _ancestors(op) for c in convolutions if c is not op))
    inside = {_key(first)} | (_descendants(first) & (ancestors | {_key(sigmoids[0])}))
    return [op.get_friendly_name() for op in ops if _key(op) in inside]


def _key(op: Any) -> str:
    return op.get_friendly_name()


def _inputs(op: Any) -> Iterator[Any]:
    for port in op.inputs():
        yield port.get_source_output().get_node()


def _outputs(op: Any) -> Iterator[Any]:
    for port in op.outputs():
        for target in port.get_target_inputs():
            yield target.get_node()


def _walk(start: Any, step: Any) -> set[str]:
    seen: set[str] = set()
    stack = list(step(start))
    while stack:
        op = stack.pop()
        if _key(op) not in seen:
            seen.add(_key(op))
            stack.extend(step(op))
    return seen


def _ancestors(op: Any) -> set[str]:
    return _walk(op, _inputs)


def _descendants(op: Any) -> set[str]:
    return _walk(op, _outputs)


def ignored_scope(model: Any) -> Any:
    """NNCF ``IgnoredScope`` naming every op of the exported graph outside :func:`network_nodes`."""
    import nncf

    inside = set(network_nodes(model))
    outside = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_friendly_name() not in inside]
    return nncf.IgnoredScope(names=outside, validate=False)


def run_graph(compiled: Any, images: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Outputs of a compiled exported graph per batch ``(B, 3, H, W)`` float32: ``pred_label (B,)`` and
    ``pred_mask (B, h, w)`` booleans, ``pred_score (B,)``."""
    results = []
    for batch in images:
        out = compiled(batch)
        named = {key.get_any_name(): value for key, value in out.items()}
        results.append(
            {
                "pred_label": np.asarray(named["pred_label"]).reshape(len(batch)).astype(bool),
                "pred_mask": np.asarray(named["pred_mask"]).reshape(len(batch), -1).astype(bool),
                "pred_score": np.asarray(named["pred_score"]).reshape(len(batch)),
            }
        )
    return results


def label_agreement(reference: list[dict[str, np.ndarray]], other: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Fractions in [0, 1] of image labels and pixel labels of ``other`` equal to ``reference`` (outputs of
    :func:`run_graph` on the same batches), with counts: ``images``, ``image_labels_equal``, ``image_agreement``,
    ``pixel_agreement``, ``max_score_change``."""
    labels = [(r["pred_label"] == o["pred_label"]) for r, o in zip(reference, other, strict=True)]
    pixels = [(r["pred_mask"] == o["pred_mask"]) for r, o in zip(reference, other, strict=True)]
    scores = [np.abs(r["pred_score"] - o["pred_score"]).max() for r, o in zip(reference, other, strict=True)]
    equal = int(sum(int(x.sum()) for x in labels))
    images = int(sum(x.size for x in labels))
    return {
        "images": images,
        "image_labels_equal": equal,
        "image_agreement": equal / images,
        "pixel_agreement": float(sum(int(x.sum()) for x in pixels) / sum(x.size for x in pixels)),
        "max_score_change": float(max(scores)),
    }


def agreement_metric(agreement: dict[str, Any]) -> float:
    """One number for NNCF's accuracy control: the lower of the image and pixel label agreements (1.0 = the f32
    labels everywhere)."""
    return min(agreement["image_agreement"], agreement["pixel_agreement"])


def loader_images(loader: Iterable[Any]) -> list[np.ndarray]:
    """The ``image`` tensors of an anomalib dataloader's batches as float32 NumPy arrays ``(B, 3, H, W)``."""
    return [np.ascontiguousarray(batch["image"].numpy(), dtype=np.float32) for batch in loader]


def quantize_network(
    model: Any,
    calibration: list[np.ndarray],
    verification: list[np.ndarray],
    accuracy_control: bool = False,
    max_drop: float = 0.01,
) -> tuple[Any, dict[str, Any]]:
    """INT8-quantise the network inside an exported OpenVINO SSIM-AE graph and verify it against f32.

    Args:
        model: ``openvino.Model`` as ``anomalib export`` converted it (f32).
        calibration: image batches ``(B, 3, H, W)`` float32 in [0, 1] for NNCF's activation statistics.
        verification: image batches to compare the INT8 graph's labels with the f32 graph's on.
        accuracy_control: NNCF's ``quantize_with_accuracy_control`` on the label agreement (INT8_ACQ) instead
            of ``quantize`` (INT8_PTQ).
        max_drop: largest fraction of labels accuracy control may change, in [0, 1].

    Returns:
        ``(quantised model, agreement)`` with :func:`label_agreement`'s fields plus ``fake_quantize`` (how many
        quantisation nodes the graph has).

    Raises:
        QuantizationRefused: the network was not found or not quantised, or the INT8 labels agree with f32 on fewer
            than :data:`MIN_IMAGE_AGREEMENT` of the images or :data:`MIN_PIXEL_AGREEMENT` of the pixels.
        ValueError: no calibration or verification images.
    """
    import nncf
    import openvino as ov

    if not calibration or not verification:
        msg = "INT8_PTQ/INT8_ACQ need images: give anomalib export a datamodule (--data) with validation images"
        raise ValueError(msg)
    core = ov.Core()
    scope = ignored_scope(model)
    reference = run_graph(core.compile_model(model, "CPU", F32), verification)
    common = {
        "preset": nncf.QuantizationPreset.MIXED,  # asymmetric activations: LeakyReLU outputs are mostly positive
        "subset_size": max(300, len(calibration)),
        "ignored_scope": scope,
    }
    if accuracy_control:
        # Each validation item carries the f32 graph's outputs, so NNCF may validate on any subset of them.
        items = [{"image": image, "reference": ref} for image, ref in zip(verification, reference, strict=True)]

        def validate(compiled: Any, subset: Iterable[dict[str, Any]]) -> float:
            subset = list(subset)
            outputs = run_graph(compiled, [item["image"] for item in subset])
            return agreement_metric(label_agreement([item["reference"] for item in subset], outputs))

        quantized = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(calibration),
            nncf.Dataset(items, lambda item: item["image"]),
            validate,
            max_drop=max_drop,
            **common,
        )
    else:
        quantized = nncf.quantize(model, nncf.Dataset(calibration), **common)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    agreement = label_agreement(reference, run_graph(core.compile_model(quantized, "CPU", F32), verification))
    agreement["fake_quantize"] = int(fake_quantize)
    logger.info("INT8 against f32: %s", agreement)
    if fake_quantize == 0:
        msg = "NNCF quantised nothing in the network: the export would be f32 under an INT8 name"
        raise QuantizationRefused(msg)
    if agreement["image_agreement"] < MIN_IMAGE_AGREEMENT or agreement["pixel_agreement"] < MIN_PIXEL_AGREEMENT:
        msg = (
            f"the INT8 model changes the f32 export's labels: image labels equal on {agreement['image_labels_equal']}"
            f" of {agreement['images']} images (at least {MIN_IMAGE_AGREEMENT:.0%} needed), pixel labels on "
            f"{agreement['pixel_agreement']:.2%} (at least {MIN_PIXEL_AGREEMENT:.0%}), largest score change "
            f"{agreement['max_score_change']:.3f}. Nothing was written. Use --compression_type INT8 (weights only: "
            "labels kept on the embedded data) or the f32 export"
        )
        raise QuantizationRefused(msg)
    return quantized, agreement
