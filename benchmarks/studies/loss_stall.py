"""Does a loss leave the network stuck at the mean grey level? Bare training loop on grid_mini crops.

Trains the SSIM-AE network for ``--steps`` Adam steps (batch 64, lr 2e-4, the paper's augmentation) with the given
loss, with or without the denoising corruption, and prints the loss, the mean per-crop standard deviation of the
reconstruction (a flat output has ~0; the crops have ~0.165) and the mean SSIM every 25 steps. It backs the SSIM-DAE
default ``loss: ssim`` (models/ssim_dae/README.md): with ``l2`` the output stayed flat for 200 steps. The printed lines
of one run are in ``benchmarks/results/loss_stall.md``.

    python benchmarks/studies/loss_stall.py l2 --denoising --steps 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from anomalib.data.utils import read_image
from torchvision.transforms.v2.functional import resize

from anomalib_ssimae.components.ssim import ssim_map
from anomalib_ssimae.data.augmentation import sample_patches
from anomalib_ssimae.data.corruption import add_masked_blocks
from anomalib_ssimae.models.ssim_ae.loss import ReconstructionLoss
from anomalib_ssimae.models.ssim_ae.torch_model import SsimAeModel, to_model_channels

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("loss", choices=["ssim", "l2", "ssim_l1"])
    parser.add_argument("--denoising", action="store_true")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--data", default=str(REPO.parent / "shared/datasets/mvtec_ad_grid_mini/train/good"))
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.stack(
        [
            resize(read_image(p, as_tensor=True), [256, 256], antialias=False)
            for p in sorted(Path(args.data).glob("*.png"))
        ]
    )
    images = to_model_channels(images, 1)
    model = SsimAeModel(in_channels=1, latent_dim=100, patch_size=128, stride=32).train()
    loss_fn = ReconstructionLoss(args.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    start = time.time()
    for step in range(args.steps):
        crops = sample_patches(images, 64, 128, 0.3, 45.0, 0.3, 0.3)
        inputs, mask = add_masked_blocks(crops, 1, 20) if args.denoising else (crops, None)
        _, reconstruction = model(inputs)
        loss = loss_fn(crops, reconstruction, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == args.steps - 1:
            with torch.no_grad():
                ssim = ssim_map(crops, reconstruction).mean().item()
            print(
                f"{args.loss} denoising={args.denoising} step {step} loss {loss.item():.4f} "
                f"reconstruction std {reconstruction.std(dim=(1, 2, 3)).mean():.4f} "
                f"crop std {crops.std(dim=(1, 2, 3)).mean():.4f} SSIM {ssim:.3f} {time.time() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
