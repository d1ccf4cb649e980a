"""One cell of the comparison: one model trained and tested on one dataset, with one seed and one tier's budget, in
this process. Its record (metrics, times, memory, per-image scores, where it ran) goes to
``--out/cells/<tier>/<dataset>/<model>/seed<seed>.json`` (``cells.py``); every failure becomes the record, with its
error.

    python benchmarks/compare/job.py MODEL DATASET SEED TIER [--data-root DIR] [--out DIR] [--match-steps]
        [--hf-cache DIR]

The runner (``run.py``) starts one such process per cell, so that one cell's crash, memory or threads never reach the
next; run it alone to repeat one cell (e.g. ``--match-steps`` on another machine, with a copy of the model's cells in
``--out``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.compare.cells import (
    OURS,
    PATCHCORE_MAX_TRAIN,
    PEERS,
    REPO,
    add_cell_options,
    budget,
    cell_path,
    cell_tier,
    dataset_arg,
    provenance,
    reference_steps,
    tier_arg,
    trains,
    write_json,
)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's load_state_dict_from_hf tries, in order


def use_hf_cache(cache: Path, backbones: Iterable[str]) -> dict[str, Path]:
    """Make timm load pretrained backbones from the Hugging Face cache ``cache``, offline.

    anomalib's models call ``timm.create_model(backbone, pretrained=True, pretrained_cfg=None)``, which loads the
    backbone's default tag from the hub (resnet18: ``timm/resnet18.a1_in1k``) through ``hf_hub_download``, that is
    ``<cache>/models--timm--resnet18.a1_in1k/snapshots/<refs/main>/model.safetensors`` (or ``pytorch_model.bin``).
    huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when imported, so this runs before anything
    imports it. Each backbone's weights are looked up here: offline, timm's own error for a missing file names neither
    the repository nor the cache. Returns backbone -> the cached weights file; raises if one is missing.
    """
    if "huggingface_hub" in sys.modules:
        msg = "use_hf_cache must run before huggingface_hub is imported: it reads HF_HUB_CACHE and HF_HUB_OFFLINE then"
        raise RuntimeError(msg)
    cache = cache.expanduser().resolve()
    if not cache.is_dir():
        raise FileNotFoundError(f"--hf-cache {cache}: {'not a folder' if cache.exists() else 'no such folder'}")
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")  # never the network, never another cache
    os.environ.pop("TIMM_USE_OLD_CACHE", None)  # it would make timm prefer torch.hub's cache to the hub's
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    found = {}
    for backbone in backbones:
        cfg = get_pretrained_cfg(backbone)
        if cfg is None or not cfg.hf_hub_id:
            raise ValueError(f"timm has no Hugging Face weights for backbone {backbone!r}")
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
        paths = [try_to_load_from_cache(cfg.hf_hub_id, name, cache_dir=cache) for name in names]
        path = next((Path(p) for p in paths if isinstance(p, str)), None)  # not None nor the "known absent" marker
        if path is None:
            folder = "models--" + cfg.hf_hub_id.replace("/", "--")
            raise FileNotFoundError(
                f"--hf-cache {cache} lacks timm's weights of {backbone}: {cfg.hf_hub_id} "
                f"({folder}/snapshots/<hash in refs/main>/{' or '.join(names)})"
            )
        found[backbone] = path
    return found


def _our_model(name: str, dataset: str, seed: int, post_processor, evaluator):
    """The variant with the init args of its two configs (model first, then dataset), as ``anomalib train`` would."""
    import importlib

    import yaml

    model_cfg = yaml.safe_load((REPO / "configs/model" / f"{name}.yaml").read_text())["model"]
    data_cfg = yaml.safe_load((REPO / "configs/data" / f"{dataset}.yaml").read_text())
    init = {**model_cfg["init_args"], **data_cfg["model"]["init_args"], "seed": seed}
    module, _, cls = model_cfg["class_path"].rpartition(".")
    model_class = getattr(importlib.import_module(module), cls)
    model = model_class(**init, post_processor=post_processor, evaluator=evaluator, visualizer=False)
    return model, data_cfg["data"]["init_args"]["train_batch_size"], data_cfg["data"]["init_args"]["eval_batch_size"]


def check_masks(folder: Path) -> None:
    """Every defective test image needs its mask, ``ground_truth/<defect>/<stem>[_mask].<ext>``: without one,
    anomalib's MVTecAD fails in pandas ("Must have equal len keys and value") without naming a file."""
    from anomalib.data.datasets.image.mvtecad import IMG_EXTENSIONS  # what MVTecAD reads: .png

    for image in sorted((folder / "test").glob("*/*")):
        if image.parent.name == "good" or image.suffix not in IMG_EXTENSIONS:
            continue
        masks = folder / "ground_truth" / image.parent.name
        if not any((masks / f"{image.stem}{tail}{ext}").is_file() for tail in ("", "_mask") for ext in IMG_EXTENSIONS):
            msg = f"{image}: no mask in {masks} ({image.stem}.png or {image.stem}_mask.png); pixel metrics need one"
            raise FileNotFoundError(msg)


def check_split(datamodule, folder: Path) -> None:
    """Fail before training, not after the budget: the metrics need good and defective test images and masks."""
    if len(datamodule.train_data) == 0:
        raise ValueError(f"{folder / 'train' / 'good'}: no training images")
    labels = frozenset(datamodule.test_data.samples.label_index.tolist())
    if labels != {0, 1}:
        have = {frozenset(): "no", frozenset({0}): "only good", frozenset({1}): "only defective"}[labels]
        msg = f"{folder / 'test'}: {have} test images; image and pixel AUROC need both good and defective ones"
        raise ValueError(msg)


def run_cell(
    model_name: str, dataset: str, seed: int, tier: str, data_root: Path, pretrained: bool, steps: dict | None = None
) -> dict:
    """Train and test one cell in this process; returns its record (metrics, times, memory, per-image scores).

    ``steps`` (from :func:`reference_steps`) replaces the wall-clock cap of a model that trains by ``max_steps``."""
    import torch
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max
    from anomalib.post_processing import PostProcessor
    from lightning.pytorch import Callback, seed_everything
    from lightning.pytorch.trainer.states import TrainerFn

    torch.set_num_threads(os.cpu_count() or 1)
    seed_everything(seed, workers=True)
    evaluator = Evaluator(
        test_metrics=[
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Max(fields=["pred_score", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False, fpr_limit=0.3),
        ]
    )
    post = PostProcessor(enable_normalization=False, enable_thresholding=False)
    ours = model_name in OURS
    if ours:
        model, batch, eval_batch = _our_model(model_name, dataset, seed, post, evaluator)
        training = True
    else:
        import anomalib.models

        init, batch, training = PEERS[model_name]
        model = getattr(anomalib.models, model_name)(
            **init, pre_trained=pretrained, post_processor=post, evaluator=evaluator, visualizer=False
        )
        eval_batch = 32
    paper = None
    if ours:
        from anomalib_ssimae.metrics import _PaperProtocolAUROC  # tensor inputs: the residual is not a batch field
        from anomalib_ssimae.models.ssim_ae.anomaly_map import residual_map

        paper = _PaperProtocolAUROC()
    scores: list[float] = []
    labels: list[int] = []
    test_time = [0.0, 0]

    class Collect(Callback):
        """Per-image raw scores (ROC curves), test-step time, and the paper's metric on the SSIM residual."""

        def on_test_batch_start(self, *args, **kwargs) -> None:
            self.start = time.perf_counter()

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args, **kwargs) -> None:
            test_time[0] += time.perf_counter() - self.start
            test_time[1] += len(outputs.image)
            scores.extend(outputs.pred_score.flatten().float().tolist())
            labels.extend(outputs.gt_label.flatten().int().tolist())
            if paper is not None:
                inputs = pl_module.model.prepare(outputs.image)
                paper.update(residual_map(inputs, outputs.reconstruction), outputs.gt_mask)

    check_masks(data_root / dataset)
    datamodule = MVTecAD(
        root=data_root,
        category=dataset,
        train_batch_size=batch,
        eval_batch_size=eval_batch,
        num_workers=2,
        seed=seed,
    )
    datamodule.setup(TrainerFn.FITTING)
    check_split(datamodule, data_root / dataset)
    n_train = len(datamodule.train_data)
    if model_name == "Patchcore" and n_train > PATCHCORE_MAX_TRAIN:
        keep = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:PATCHCORE_MAX_TRAIN]
        datamodule.train_data = datamodule.train_data.subsample(sorted(keep.tolist()))
    engine = Engine(
        callbacks=[Collect(), ModelCheckpoint(save_top_k=0)],  # no checkpoint files
        logger=False,
        default_root_dir=os.environ.get("COMPARE_WORKDIR", "/tmp/compare"),
        accelerator="cpu",
        devices=1,
        max_epochs=1000 if training else 1,
        max_steps=steps["max_steps"] if training and steps else -1,
        max_time={"seconds": budget(tier)} if training and not steps else None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_wall = time.perf_counter() - start
    record = {
        "model": model_name,
        "dataset": dataset,
        "seed": seed,
        "tier": tier,
        "status": "ok",
        "pretrained": pretrained and not ours,
        "data_root": str(data_root.resolve()),
        "train_images": len(datamodule.train_data),
        "test_images": test_time[1],
        "epochs": model.trainer.current_epoch,
        "steps": model.trainer.global_step,
        "budget": ({**steps} if steps else {"max_time_s": budget(tier)}) if training else {"one_pass": True},
        "train_s": round(train_s, 1),
        "test_wall_s": round(test_wall, 1),
        "test_ms_per_image": round(1000 * test_time[0] / max(test_time[1], 1), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "precision": "bf16-mixed" if getattr(model, "_bf16", False) else str(model.trainer.precision),
        **{key: round(float(value), 4) for key, value in results.items()},
        "scores": scores,
        "labels": labels,
    }
    if paper is not None:
        fpr, tpr = paper.curve()
        record |= {
            "paper_AUROC": round(float(paper.compute()), 4),
            "paper_fpr": fpr.tolist(),
            "paper_tpr": tpr.tolist(),
        }
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=(*OURS, *PEERS))
    parser.add_argument("dataset", type=dataset_arg)
    parser.add_argument("seed", type=int)
    parser.add_argument("tier", type=tier_arg)
    add_cell_options(parser)
    args = parser.parse_args(argv)
    pretrained = bool(args.hf_cache) and args.model in PEERS
    args.tier = cell_tier(args.model, args.tier)  # one-pass models: the short tier's cell serves every tier
    path = cell_path(args.out, args.tier, args.dataset, args.model, args.seed, pretrained)
    origin = {}
    try:
        weights = use_hf_cache(args.hf_cache, {PEERS[args.model][0]["backbone"]}) if pretrained else {}
        origin = provenance()  # after use_hf_cache (it imports huggingface_hub), before training: fails at once
        steps = reference_steps(path.parent) if args.match_steps and trains(args.model) else None
        if args.match_steps and trains(args.model) and steps is None:
            raise ValueError(f"--match-steps: no wall-clock cell in {path.parent} to take the steps from")
        record = run_cell(args.model, args.dataset, args.seed, args.tier, args.data_root, pretrained, steps)
        if weights:  # the snapshot the backbone came from: models--timm--resnet18.a1_in1k/snapshots/<hash>/<file>
            record["weights"] = [str(p.relative_to(args.hf_cache.expanduser().resolve())) for p in weights.values()]
        record |= origin
    except Exception as error:  # noqa: BLE001 - every failure becomes a row with its error
        traceback.print_exc()
        record = {"model": args.model, "dataset": args.dataset, "seed": args.seed, "tier": args.tier,
                  "pretrained": pretrained, "status": "failed", "error": f"{type(error).__name__}: {error}",
                  **origin}  # fmt: skip
    write_json(path, record)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
