"""Reconstruction losses of the SSIM autoencoder.

- ``"ssim"``: (1 - SSIM) / 2 averaged over pixels, Gaussian window 11 x 11, sigma 1.5 (Rádli & Czúni 2021, Eq. 7;
  Bergmann et al. 2019). "Valid" filtering, as pytorch-msssim in the authors' code, so no padded border enters.
- ``"l2"``: mean squared error (the ℓ2-AE of Bergmann et al.).
- ``"ssim_l1"``: the SSIM loss plus ``l1_weight`` times the mean absolute error (``ssim_l1_loss`` of the
  plutoyuxie code): SSIM alone neglects colour and mean brightness.
"""

from __future__ import annotations

import torch
from torch import nn

from anomalib_ssimae.components.ssim import ssim_map

LOSSES = ("ssim", "l2", "ssim_l1")


class ReconstructionLoss(nn.Module):
    """Loss between patches and their reconstructions.

    Args:
        loss: ``"ssim"``, ``"l2"`` or ``"ssim_l1"``.
        l1_weight: weight of the L1 term of ``"ssim_l1"``.
        window_size: SSIM window side in pixels.

    ``forward(inputs, reconstruction)``: two ``(N, C, P, P)`` tensors in [0, 1] -> scalar float32 tensor; 0 for
    identical inputs; the SSIM loss lies in [0, 1].

    Raises:
        ValueError: for an unknown ``loss``.
    """

    def __init__(self, loss: str = "ssim", l1_weight: float = 1.0, window_size: int = 11) -> None:
        super().__init__()
        if loss not in LOSSES:
            msg = f"loss must be one of {LOSSES}, got {loss!r}"
            raise ValueError(msg)
        self.loss = loss
        self.l1_weight = l1_weight
        self.window_size = window_size

    def forward(self, inputs: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Scalar loss (see class docstring)."""
        inputs, reconstruction = inputs.float(), reconstruction.float()
        if self.loss == "l2":
            return (inputs - reconstruction).pow(2).mean()
        value = ((1 - ssim_map(inputs, reconstruction, self.window_size, padding="valid")) / 2).mean()
        if self.loss == "ssim_l1":
            value = value + self.l1_weight * (inputs - reconstruction).abs().mean()
        return value
