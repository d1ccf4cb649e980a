"""Reconstruction losses of the SSIM autoencoder.

- ``"ssim"``: (1 - SSIM) / 2 averaged over pixels, Gaussian window 11 x 11, sigma 1.5 (Rádli & Czúni 2021, Eq. 7;
  Bergmann et al. 2019), with reflect padding ("same"), so that every pixel of the crop has a window centred on it.
  The authors' code (pytorch-msssim) uses "valid" windows only, which leaves the outer 2-3 pixels of every crop
  almost without gradient: the network then reconstructed patch edges worse, and since the image border is always
  a patch edge, the residual rose there (border band 1.11x the interior on grid after 50,000 crops, 1.06x with
  "same"; ``benchmarks/results/border.md``). ``padding="valid"`` keeps the authors' form.
- ``"l2"``: mean squared error (the ℓ2-AE of Bergmann et al.).
- ``"ssim_l1"``: the SSIM loss plus ``l1_weight`` times the mean absolute error (``ssim_l1_loss`` of the
  plutoyuxie code): SSIM alone neglects colour and mean brightness.

Denoising training (Rádli & Czúni Eq. 4) passes the corruption ``mask``: the per-pixel loss map ``e`` is weighted by
``alpha`` on corrupted pixels and ``beta`` elsewhere and averaged over all pixels,
``J = (alpha * sum_{i in C} e_i + beta * sum_{i not in C} e_i) / (number of pixels)``, i.e. Eq. 4 divided by the
pixel count (so alpha = beta = 1 is exactly the unweighted loss). For ``"l2"`` ``e`` is the squared error (Eq. 4 as
written); for the SSIM losses ``e`` is the per-pixel (1 - SSIM map) / 2 with reflect padding ("same"), so that each
value sits on its pixel and the weighting means something.
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
        alpha, beta: weights of corrupted and clean pixels when a mask is given (paper: 1, 1).
        padding: SSIM padding of the unmasked loss, ``"same"`` (reflect) or ``"valid"`` (see the module docstring).

    ``forward(inputs, reconstruction, mask=None)``: two ``(N, C, P, P)`` tensors in [0, 1] and an optional
    ``(N, 1, P, P)`` bool corruption mask -> scalar float32 tensor; 0 for identical inputs; the SSIM loss lies in
    [0, 1].

    Raises:
        ValueError: for an unknown ``loss``.
    """

    def __init__(
        self,
        loss: str = "ssim",
        l1_weight: float = 1.0,
        window_size: int = 11,
        alpha: float = 1.0,
        beta: float = 1.0,
        padding: str = "same",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            msg = f"loss must be one of {LOSSES}, got {loss!r}"
            raise ValueError(msg)
        self.loss = loss
        self.l1_weight = l1_weight
        self.window_size = window_size
        self.alpha = alpha
        self.beta = beta
        if padding not in {"same", "valid"}:
            msg = f"padding must be 'same' or 'valid', got {padding!r}"
            raise ValueError(msg)
        self.padding = padding

    def loss_map(self, inputs: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Per-pixel loss ``(N, 1, P, P)``, averaged over channels (see module docstring)."""
        inputs, reconstruction = inputs.float(), reconstruction.float()
        if self.loss == "l2":
            return (inputs - reconstruction).pow(2).mean(dim=1, keepdim=True)
        value = (1 - ssim_map(inputs, reconstruction, self.window_size, padding="same")) / 2
        if self.loss == "ssim_l1":
            value = value + self.l1_weight * (inputs - reconstruction).abs()
        return value.mean(dim=1, keepdim=True)

    def forward(
        self,
        inputs: torch.Tensor,
        reconstruction: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar loss (see class docstring)."""
        if mask is not None:
            weights = torch.where(mask, self.alpha, self.beta)
            return (weights * self.loss_map(inputs, reconstruction)).mean()
        inputs, reconstruction = inputs.float(), reconstruction.float()
        if self.loss == "l2":
            return (inputs - reconstruction).pow(2).mean()
        value = ((1 - ssim_map(inputs, reconstruction, self.window_size, padding=self.padding)) / 2).mean()
        if self.loss == "ssim_l1":
            value = value + self.l1_weight * (inputs - reconstruction).abs().mean()
        return value
