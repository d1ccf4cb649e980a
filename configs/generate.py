"""Write every YAML config under configs/ from one table, so that the four models' configs cannot drift apart.

    python configs/generate.py          # (re)write the configs
    python configs/generate.py --check  # exit 1 if a committed config differs (run by the tests)

Paper defaults (Rádli & Czúni 2021 §5, methods.md): textures grayscale with d = 100 and flips; parts with d = 500,
colour, and no flips where the part is not symmetric.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Training recipe and image score chosen from the benchmarks (see the model card of SSIM-AE):
# benchmarks/results/time_to_quality.md (schedule, rate, batch), convergence.md (length), image_scores.md (score).
EPOCHS = 30  # x crops_per_epoch 10,000 = 300,000 training crops, unless a dataset's curve says otherwise
BATCH = 16
LEARNING_RATE = "1.0e-3"
WARMUP_CROPS = 5000
SCORE = "max"
SCORE_SIGMA = 16.0
QUICKSTART_EPOCHS = 6  # x 10,000 crops
# A cap for slow CPUs (fp32 only): training stops there even if the epochs are not done.
QUICKSTART_MAX_TIME = "  max_time: \"00:00:07:00\"  # days:hours:minutes:seconds; a cap for slow CPUs\n"

MODELS = {  # config folder: (class, description, extra init_args)
    "ssim_ae": ("SsimAe", "SSIM-AE (Bergmann et al. 2019)", "    loss: ssim  # Eq. 7\n"),
    "ssim_ae_extended": ("SsimAeExtended", "SSIM-AEe, the extended network (Rádli & Czúni 2021, Table 2)",
                         "    loss: ssim  # Eq. 7\n"),
    "ssim_dae": ("SsimDae", "SSIM-DAE, denoising training with masked blocks (Rádli & Czúni 2021, Eq. 3-4)",
                 "    denoising: true\n    loss: ssim  # Eq. 4 weighting of the per-pixel SSIM loss; 'l2' is Eq. 4 as written\n"
                 "    num_blocks: 1\n    block_size: 20\n    alpha: 1.0\n    beta: 1.0\n"),
    "ssim_dae_extended": ("SsimDaeExtended", "SSIM-DAEe, denoising training + extended network (Rádli & Czúni 2021)",
                          "    denoising: true\n    loss: ssim\n    num_blocks: 1\n    block_size: 20\n"
                          "    alpha: 1.0\n    beta: 1.0\n"),
}

DATASETS = {
    "mvtec_ad_grid_mini": dict(desc="MVTec AD \"grid\" subset, 512 x 512 grayscale, 25 train / 14 test images. A texture.",
                               image_size="256", in_channels=1, latent=100, flips=0.3, rot=45.0,
                               epochs=10),  # 100,000 crops reached pixel AUROC 0.91 / AUPRO 0.71 (time_to_quality.md)
    "magnetic_tile": dict(desc="Magnetic tile surfaces, grayscale ROI crops of varying size (103-632 x 222-403),\n"
                               "# resized to 256 x 256. A surface.",
                          image_size="256", in_channels=1, latent=100, flips=0.3, rot=45.0),
    "bsdata_pitting": dict(desc="BSData ball-screw spindle, 512 x 208 RGB; kept at full size (non-square).\n"
                                "# Grinding marks are horizontal, so rotations stay small.",
                           image_size="[208, 512]", in_channels=1, latent=100, flips=0.3, rot=10.0),
    "mvtec3d_tire": dict(desc="MVTec 3D-AD tire (RGB only), 300 x 400 (W x H), resized to 240 x 320.\n"
                              "# A part: colour, d = 500.",
                         image_size="[320, 240]", in_channels=3, latent=500, flips=0.3, rot=45.0),
    "hazelnut_toy": dict(desc="anomalib's Hazelnut Toy, 256 x 256 RGB, colour defects. A part: colour, d = 500.",
                         image_size="256", in_channels=3, latent=500, flips=0.3, rot=45.0),
    "deeppcb": dict(desc="DeepPCB binarized PCB templates, 640 x 640, resized to 384.\n"
                         "# Asymmetric and aligned: no flips, no rotation. A part: d = 500.",
                    image_size="384", in_channels=1, latent=500, flips=0.0, rot=0.0),
}

TEMPLATE = """# {model_desc} on {name}: {desc}
# anomalib train --config configs/{folder}/{name}.yaml{root_hint}
model:
  class_path: anomalib_ssimae.{cls}
  init_args:
    image_size: {image_size}
    patch_size: 128
    stride: 32
    in_channels: {in_channels}
    latent_dim: {latent}
    residual: ssim
    score: {score}
    score_sigma: {score_sigma}
    crops_per_epoch: {crops}
    batch_size: {batch}
    rotation_prob: {rot_prob}
    max_rotation: {rot}
    hflip_prob: {flips}
    vflip_prob: {flips}
    learning_rate: {lr}  # peak of the cosine schedule (paper: 2.0e-4 constant); benchmarks/results/time_to_quality.md
    lr_schedule: cosine
    warmup_crops: {warmup}
    weight_decay: 0.0
    train_precision: auto  # bf16 autocast where the CPU has bf16 units (AVX512-BF16, AMX), fp32 elsewhere
    seed: 42  # the model seeds torch/NumPy/Python: anomalib 2.7's CLI ignores seed_everything
{extra}data:
  class_path: anomalib.data.MVTecAD
  init_args:
    root: {root}
    category: {category}
    train_batch_size: 32
    eval_batch_size: 16
    num_workers: 2
    val_split_mode: from_test  # half of the test images (good and defective) become validation images
    val_split_ratio: 0.5
    seed: 42
trainer:
  max_epochs: {epochs}
  accelerator: cpu
  devices: 1
{max_time}  log_every_n_steps: 10
  logger:
    - class_path: anomalib.loggers.AnomalibTensorBoardLogger
      init_args: {{save_dir: results/tensorboard, name: {folder}_{name}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.EarlyStopping
      init_args: {{monitor: val_loss, patience: 10, mode: min}}
default_root_dir: results
"""


def render(folder: str, name: str, quickstart: bool = False) -> str:
    """The YAML text of one config."""
    cls, model_desc, extra = MODELS[folder]
    d = DATASETS[name]
    text = TEMPLATE.format(
        model_desc=model_desc, name=name, desc=d["desc"], folder=folder, cls=cls, image_size=d["image_size"],
        in_channels=d["in_channels"], latent=d["latent"], rot_prob=0.3 if d["rot"] else 0.0, rot=d["rot"],
        flips=d["flips"], extra=extra, root="../shared/datasets", category=name,
        epochs=QUICKSTART_EPOCHS if quickstart else d.get("epochs", EPOCHS), crops=10000, batch=BATCH, lr=LEARNING_RATE,
        warmup=WARMUP_CROPS, score=SCORE, score_sigma=SCORE_SIGMA,
        max_time=QUICKSTART_MAX_TIME if quickstart else "",
        root_hint=f" [--data.root <folder holding {name}/>]",
    )
    if quickstart:
        text = text.replace(f"# {model_desc} on {name}:", "# Quickstart: SSIM-AE on the embedded bsdata_pitting_mini"
                            " (40 train / 28 test images, in this repository).\n# Short schedule: train + test in"
                            " under 10 minutes on 2 CPU cores.\n# Source data:")
        text = text.replace("root: ../shared/datasets", "root: datasets")
        text = text.replace(f"category: {name}\n", "category: bsdata_pitting_mini\n")
        text = text.replace(f"name: {folder}_{name}}}", "name: ssim_ae_quickstart}")
        text = text.replace(f"configs/{folder}/{name}.yaml [--data.root <folder holding {name}/>]",
                            "configs/ssim_ae/quickstart.yaml")
    return text


def expected() -> dict[Path, str]:
    """Every config file and its text."""
    files = {HERE / folder / f"{name}.yaml": render(folder, name) for folder in MODELS for name in DATASETS}
    files[HERE / "ssim_ae" / "quickstart.yaml"] = render("ssim_ae", "bsdata_pitting", quickstart=True)
    return files


def main() -> int:
    """Write (or with --check, compare) the configs."""
    check = "--check" in sys.argv
    stale = []
    for path, text in expected().items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"stale config: {path} (run python configs/generate.py)")  # noqa: T201
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
