"""Threshold-free evaluation of an SSIM-AE checkpoint on every test image of an MVTec-layout dataset.

Used by ``convergence.py`` (and usable alone). Unlike ``anomalib test`` it scores **all** test images (anomalib's
``from_test`` split keeps half of them for validation) on the **raw** maps and scores, and it computes several
things from the same reconstructions, so that choices can be compared on identical networks:

- pixel AUROC and AUPRO (FPR <= 0.3, anomalib's metrics) of each residual variant;
- the border-band ratio: mean residual of the defect-free test images within ``BAND`` px of the image border
  divided by the mean over the interior (1.0 = no border artefact), and the mean residual by distance to the border;
- image AUROC of candidate image scores (maximum of the Gaussian-smoothed map at several sigmas, mean, quantiles,
  mean of the top-k pixels);
- ``val_loss``: the training loss (SSIM, Eq. 7) on the tiled patches of the defect-free test images.

    python benchmarks/quality/evaluate.py CHECKPOINT --data-root DIR [--set residual=l2 score_sigma=0 ...]

``--set`` changes the model's map and score settings (``residual``, ``score``, ``score_sigma``, ``score_fraction``)
before scoring: the "model" entry then shows what a config with those settings gives on the same network.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import yaml
from anomalib.metrics.aupro import _AUPRO as AUPRO
from anomalib.metrics.auroc import _AUROC as AUROC
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from anomalib_ssimae.components.ssim import ssim_map
from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator, residual_map
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss

BAND = 16  # px: the border band of issue 8
PROFILE = 32  # px: residual profile by distance to the border
SIGMAS = (1, 2, 4, 8, 16)
# the package's own scores, at the settings compared
SCORE_CANDIDATES = {
    **{f"max_sigma{s}": AnomalyMapGenerator(score="max", score_sigma=float(s)) for s in SIGMAS},
    "mean": AnomalyMapGenerator(score="mean"),
    **{f"top{f:g}_mean": AnomalyMapGenerator(score="top_mean", score_fraction=f) for f in (0.001, 0.01)},
}


def test_samples(root: Path) -> list[tuple[Path, Path | None, int]]:
    """``(image, mask or None, label)`` for every test image of an MVTec-layout dataset, sorted."""
    samples = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for image in sorted(folder.glob("*.png")):
            if folder.name == "good":
                samples.append((image, None, 0))
            else:
                samples.append((image, root / "ground_truth" / folder.name / f"{image.stem}_mask.png", 1))
    return samples


def load(sample: tuple[Path, Path | None, int], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``(3, H, W)`` in [0, 1] resized as the package's pre-processor does; mask ``(H, W)`` bool."""
    image = TF.to_image(Image.open(sample[0]).convert("RGB"))
    image = TF.resize(TF.to_dtype(image, torch.float32, scale=True), list(size), antialias=False)
    if sample[1] is None:
        return image, torch.zeros(size, dtype=torch.bool)
    mask = TF.to_image(Image.open(sample[1]).convert("L"))
    mask = TF.resize(mask, list(size), interpolation=TF.InterpolationMode.NEAREST)
    return image, mask[0] > 127


def distance_to_border(height: int, width: int) -> torch.Tensor:
    """``(H, W)`` integer distance in px of every pixel to the nearest image border (0 on the outermost ring)."""
    rows = torch.arange(height)
    cols = torch.arange(width)
    dist_rows = torch.minimum(rows, height - 1 - rows)[:, None]
    dist_cols = torch.minimum(cols, width - 1 - cols)[None, :]
    return torch.minimum(dist_rows, dist_cols)


def residual_variants(inputs: torch.Tensor, reconstruction: torch.Tensor, model: torch.nn.Module) -> dict:
    """Residual maps ``(B, 1, H, W)`` to compare: the model's own (SSIM from windows inside the image), the SSIM map
    with reflect padding (the package before the border fix), the squared error and SSIM + squared error."""
    maps = {"model": model.anomaly_prediction(inputs, reconstruction).anomaly_map}
    maps["ssim_same_reflect"] = 1 - ssim_map(inputs, reconstruction, padding="same").mean(1, keepdim=True)
    maps["l2"] = residual_map(inputs, reconstruction, "l2")
    maps["ssim_l2"] = residual_map(inputs, reconstruction, "ssim_l2")
    return maps


def image_scores(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Candidate image scores ``(B,)`` from maps ``(B, 1, H, W)``."""
    flat = maps.flatten(1)
    scores = {name: generator.image_score(maps) for name, generator in SCORE_CANDIDATES.items()}
    scores["max_raw"] = flat.amax(1)
    for q in (0.99, 0.999):
        scores[f"quantile{q}"] = torch.quantile(flat, q, dim=1)
    return scores


def place_defect(image: torch.Tensor, mask: torch.Tensor, placement: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll a defective image and its mask together so that the defect's bounding box touches the top-left corner
    (``"corner"``) or is centred (``"centre"``). Both placements wrap the image around, so both carry the same kind
    of wrap seams; only the defect's position differs."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if placement == "corner":
        shift = (-int(rows.min()), -int(cols.min()))
    else:
        shift = (
            mask.shape[0] // 2 - (int(rows.min()) + int(rows.max())) // 2,
            mask.shape[1] // 2 - (int(cols.min()) + int(cols.max())) // 2,
        )
    return image.roll(shift, dims=(-2, -1)), mask.roll(shift, dims=(-2, -1))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, root: Path, size: tuple[int, int], batch: int = 8, placement: str | None = None
) -> dict:
    """All metrics of this module for one torch model (:class:`SsimAeModel`, eval mode) on ``root``'s test set;
    ``placement`` (``"corner"`` or ``"centre"``) moves every defect first (:func:`place_defect`)."""
    model.eval()
    samples = test_samples(root)
    loss = ReconstructionLoss("ssim", padding="same")  # the package's training loss and val_loss
    dist = distance_to_border(*size)
    profile = {}
    pixel_metrics: dict[str, tuple[AUROC, AUPRO]] = {}
    scores: dict[str, dict[str, list[torch.Tensor]]] = {}
    labels, val_losses = [], []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        pairs = [load(s, size) for s in chunk]
        if placement is not None:
            pairs = [place_defect(*p, placement) if p[1].any() else p for p in pairs]
        images = torch.stack([p[0] for p in pairs])
        masks = torch.stack([p[1] for p in pairs])
        label = torch.tensor([s[2] for s in chunk])
        labels.append(label)
        inputs, reconstruction, patches, rebuilt = model.reconstruct(images, keep_patches=True)
        good = label == 0
        if good.any():
            keep = good.repeat_interleave(len(patches) // len(inputs))
            val_losses.append((float(loss(patches[keep], rebuilt[keep])), int(good.sum())))
        for name, maps in residual_variants(inputs, reconstruction, model).items():
            if name not in pixel_metrics:  # AUPRO is slow: only for the model's own map
                pixel_metrics[name] = (AUROC(), AUPRO(fpr_limit=0.3)) if name == "model" else (AUROC(),)
                profile[name] = torch.zeros(2, PROFILE + 1, dtype=torch.float64)
            for metric in pixel_metrics[name]:
                metric.update(maps[:, 0], masks.int())
            if good.any():
                good_maps = maps[good, 0].double()
                for d in range(PROFILE + 1):
                    where = dist == d if d < PROFILE else dist >= PROFILE
                    profile[name][0, d] += good_maps[:, where].sum()
                    profile[name][1, d] += good_maps[:, where].numel()
            candidates = image_scores(maps)
            if name == "model":  # the model's own score, whatever its settings
                candidates[score_name(model)] = model.anomaly_map_generator.image_score(maps)
            for score, value in candidates.items():
                scores.setdefault(name, {}).setdefault(score, []).append(value)
    labels = torch.cat(labels)
    result = {"test_images": len(samples), "defective": int(labels.sum())}
    groups = [re.match(r"(exp\d+)_", s[0].name) for s in samples]  # magnetic_tile's lighting sets
    if all(groups):
        own = torch.cat(scores["model"][score_name(model)])
        result["image_AUROC_by_lighting_set"] = {}
        for group in sorted({g.group(1) for g in groups}):
            keep = torch.tensor([g.group(1) == group for g in groups])
            if labels[keep].min() != labels[keep].max():
                metric = AUROC()
                metric.update(own[keep], labels[keep])
                result["image_AUROC_by_lighting_set"][group] = round(float(metric.compute()), 4)
    result["val_loss"] = sum(v * n for v, n in val_losses) / max(1, sum(n for _, n in val_losses))
    for name, metrics in pixel_metrics.items():
        sums, counts = profile[name]
        band = float(sums[:BAND].sum() / counts[:BAND].sum()) if counts[:BAND].sum() else float("nan")
        inner = float(sums[BAND:].sum() / counts[BAND:].sum()) if counts[BAND:].sum() else float("nan")
        entry = {
            "pixel_AUROC": float(metrics[0].compute()),
            "pixel_AUPRO": float(metrics[1].compute()) if len(metrics) > 1 else float("nan"),
            "border_ratio": band / inner if inner else float("nan"),
            "border_profile": [round(float(s / c), 5) for s, c in zip(sums, counts, strict=True) if c],
        }
        entry["image_AUROC"] = {}
        for score, values in scores[name].items():
            metric = AUROC()
            metric.update(torch.cat(values), labels)
            entry["image_AUROC"][score] = float(metric.compute())
        result[name] = entry
    result["model"]["score"] = score_name(model)
    return result


def score_name(model: torch.nn.Module) -> str:
    """The key in :func:`image_scores` of the model's own image score."""
    generator = model.anomaly_map_generator
    if generator.score == "max":
        return f"max_sigma{generator.score_sigma:g}"
    return "mean" if generator.score == "mean" else f"top{generator.score_fraction:g}_mean"


MAP_SETTINGS = ("residual", "score", "score_sigma", "score_fraction")


def load_model(checkpoint: Path, overrides: dict | None = None) -> tuple[torch.nn.Module, tuple[int, int]]:
    """The torch model and image size of a checkpoint written by ``convergence.py`` or ``anomalib train``, with
    ``overrides`` of its map and score settings (:data:`MAP_SETTINGS`)."""
    from anomalib_ssimae.models import SsimAe

    if set(overrides or {}) - set(MAP_SETTINGS):
        raise SystemExit(f"--set takes only {', '.join(MAP_SETTINGS)}, got {', '.join(overrides)}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    module_class = state.get("module_class", SsimAe)
    hparams = dict(state["hyper_parameters"]) | (overrides or {})
    hparams.pop("seed", None)
    module = module_class(**{**hparams, "seed": None}, visualizer=False)
    weights = {k: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    module.load_state_dict(weights | {k: v for k, v in module.state_dict().items() if not k.startswith("model.")})
    return module.model.float(), module._image_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset folder (MVTec layout)")
    parser.add_argument("--set", nargs="*", default=[], help=f"map settings key=value ({', '.join(MAP_SETTINGS)})")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    model, size = load_model(args.checkpoint, overrides)
    print(json.dumps(evaluate(model, args.data_root, size), indent=1))


if __name__ == "__main__":
    main()
