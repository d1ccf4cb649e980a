"""PyTorch model of the SSIM autoencoder: channels -> tiles -> network -> stitched reconstruction -> anomaly map.

Inference (Bergmann et al. 2019 §4.3; Rádli & Czúni 2021 §5): resized image -> grayscale (if ``in_channels == 1``)
-> optional per-image intensity standardisation -> overlapping patches (``patch_size`` at ``stride``) -> reconstruction of all patches -> patches averaged back ->
residual map (1 - SSIM map, Eq. 8) -> anomaly score. All of it is in ``forward``, so export carries it. Eager inference
cuts, reconstructs and stitches ``patch_batch_size`` patches at a time, so large images need no memory per patch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_ssimae.components.tiling import PatchTiler
from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator
from anomalib_ssimae.models.ssim_ae.frame_check import FrameCheck
from anomalib_ssimae.models.ssim_ae.network import NETWORKS, SsimAeNetwork
from anomalib_ssimae.precision import full_fp32

__all__ = [
    "INTENSITY_NORMALIZATIONS",
    "OUT_OF_DISTRIBUTION_SCORE",
    "SsimAeModel",
    "TiledReconstruction",
    "standardize",
    "to_model_channels",
]

INTENSITY_NORMALIZATIONS = ("none", "standardize")
STANDARD_MEAN, STANDARD_STD = 0.5, 0.15  # +-3.3 standard deviations fit in [0, 1]
# Raw image score of a frame the frame check calls out of distribution: above any residual score (SSIM maps lie in
# [0, 2], x4 at most with position normalisation), so it normalises to 1.0 and is labelled anomalous; finite and
# representable in fp16, so that metrics, normalisation and compressed exports handle it as a number.
OUT_OF_DISTRIBUTION_SCORE = 1.0e4


def to_model_channels(images: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Convert anomalib's 3-channel batches to the network's channels.

    ``(B, 3, H, W)`` in [0, 1] -> ``(B, in_channels, H, W)``; grayscale uses the ITU-R 601 luma weights (as PIL and
    torchvision), which give the original values back for gray images stored as RGB. Images that already have
    ``in_channels`` channels pass through.

    Raises:
        ValueError: for images with neither 3 nor ``in_channels`` channels.
    """
    if images.shape[1] == in_channels:
        return images
    if images.shape[1] != 3:
        msg = f"expected images with 3 or {in_channels} channels, got shape {tuple(images.shape)}"
        raise ValueError(msg)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Per-image intensity standardisation: ``(B, C, H, W)`` in [0, 1] -> the same shape in [0, 1], each image shifted
    and scaled to mean 0.5 and standard deviation 0.15 over all its pixels and channels, then clipped.

    For surfaces whose brightness and contrast change from image to image (lighting sets, dark low-contrast
    captures): SSIM's stabilising constants (``C1 = 0.01**2``, ``C2 = 0.03**2`` for a value range of 1) swamp the
    contrast of a dark image with a standard deviation of a few grey levels, so its defects barely change the map.
    Not in the papers (an addition of this package). A constant image becomes 0.5 everywhere (the standard
    deviation is floored at 1/255).
    """
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = (images - mean).square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1 / 255)
    return ((images - mean) / std * STANDARD_STD + STANDARD_MEAN).clamp(0, 1)


class TiledReconstruction(NamedTuple):
    """Tiled reconstruction of whole images (``C`` = the network's channels, ``L`` patches per image).

    Fields:
        inputs: the images as the network sees them (its channels, standardised if the model does so),
            ``(B, C, H, W)`` in [0, 1].
        reconstruction: the stitched reconstruction, ``(B, C, H, W)`` in (0, 1).
        input_patches: ``(B * L, C, P, P)``, the patches the network saw, in the order of
            :meth:`PatchTiler.tile <anomalib_ssimae.components.tiling.PatchTiler.tile>` (those of one image
            contiguous); ``None`` unless asked for (``reconstruct(images, keep_patches=True)``) or exporting.
        reconstructed_patches: ``(B * L, C, P, P)``, its output; ``None`` with ``input_patches``.
    """

    inputs: torch.Tensor
    reconstruction: torch.Tensor
    input_patches: torch.Tensor | None
    reconstructed_patches: torch.Tensor | None


class SsimAeModel(nn.Module):
    """SSIM autoencoder with tiled inference (the ``model`` of :class:`anomalib_ssimae.SsimAe`).

    Args:
        in_channels: 1 converts anomalib's RGB batches to grayscale inside the model; 3 keeps colour.
        latent_dim: bottleneck size ``d``.
        patch_size: training crop and inference patch side in pixels.
        stride: inference patch stride in pixels; the last row/column of patches is aligned to the border.
        residual, score, score_sigma, score_fraction: the anomaly map and image score (:class:`AnomalyMapGenerator`).
        network: ``"ssim_ae"`` (Bergmann Table 1) or ``"extended"`` (Rádli & Czúni Table 2), see
            :data:`~anomalib_ssimae.models.ssim_ae.network.NETWORKS`.
        position_normalization: ``(height, width)`` of the anomaly maps to divide them by the defect-free residual
            per position (:class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.PositionNormalization`), or ``None``.
        patch_batch_size: patches cut, reconstructed and stitched per step at inference, which bounds the memory of
            large images and eval batches (the network's activations take about 1.1 MiB per 128 px SSIM-AE patch;
            the patches of a whole image, 16 times its pixels at stride 32, are never held); at least 1.
        intensity_normalization: ``"none"`` or ``"standardize"`` (:func:`standardize`, per whole image, before
            tiling; training crops are cut from standardised images, see :meth:`prepare`).

    ``frame_check`` (:class:`~anomalib_ssimae.models.ssim_ae.frame_check.FrameCheck`, fitted with
    :meth:`fit_frame_check`) turns the image score of an out-of-distribution frame into
    :data:`OUT_OF_DISTRIBUTION_SCORE`.

    ``forward`` in training mode maps crops ``(N, 3 or C, P, P)`` to ``(inputs, reconstruction)``, both
    ``(N, in_channels, P, P)``. In eval mode it maps resized images ``(B, 3, H, W)`` in [0, 1], ``H, W >= patch_size``
    to ``InferenceBatch(pred_score=(B,), anomaly_map=(B, 1, H, W))``; the map is the residual, in [0, 2] for SSIM.

    Raises:
        ValueError: for an unknown ``network`` or ``intensity_normalization``, a bad stride or a bad network argument.
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int = 100,
        patch_size: int = 128,
        stride: int = 32,
        residual: str = "ssim",
        score: str = "max",
        score_sigma: float = 16.0,
        score_fraction: float = 0.01,
        network: str = "ssim_ae",
        position_normalization: tuple[int, int] | None = None,
        patch_batch_size: int = 256,
        intensity_normalization: str = "none",
    ) -> None:
        super().__init__()
        if intensity_normalization not in INTENSITY_NORMALIZATIONS:
            msg = f"intensity_normalization must be one of {INTENSITY_NORMALIZATIONS}, got {intensity_normalization!r}"
            raise ValueError(msg)
        self.intensity_normalization = intensity_normalization
        if patch_batch_size < 1:
            msg = f"patch_batch_size must be at least 1, got {patch_batch_size}"
            raise ValueError(msg)
        self.patch_batch_size = patch_batch_size
        if network not in NETWORKS:
            msg = f"network must be one of {sorted(NETWORKS)}, got {network!r}"
            raise ValueError(msg)
        self.in_channels = in_channels
        self.anomaly_map_generator = AnomalyMapGenerator(
            residual, score, score_sigma, score_fraction, position_normalization
        )
        self.network = SsimAeNetwork(in_channels, latent_dim, patch_size, *NETWORKS[network])
        self.tiler = PatchTiler(patch_size, stride)
        self.frame_check = FrameCheck(in_channels)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Whole resized images ``(B, 3 or C, H, W)`` in [0, 1] -> what the network sees, ``(B, C, H, W)`` in [0, 1]:
        the network's channels (:func:`to_model_channels`), standardised if ``intensity_normalization`` says so."""
        inputs = to_model_channels(images, self.in_channels)
        return standardize(inputs) if self.intensity_normalization == "standardize" else inputs

    def reconstruct(
        self,
        images: torch.Tensor,
        keep_patches: bool = False,
        on_chunk: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> TiledReconstruction:
        """Tiled reconstruction of whole images ``(B, 3 or C, H, W)`` (see :class:`TiledReconstruction`).

        Eager: :meth:`_reconstruct_in_chunks`, whose memory does not grow with the number of patches unless
        ``keep_patches`` asks for them all; ``on_chunk`` sees each chunk of patches instead (validation's ``val_loss``;
        see :meth:`PatchTiler.apply <anomalib_ssimae.components.tiling.PatchTiler.apply>`). Export: one tile -> network -> untile, so
        that the graph keeps a dynamic batch dimension (a loop of chunks would fix it to the example's); the
        exported model therefore holds all patches at once.
        """
        inputs = self.prepare(images)
        height, width = inputs.shape[-2:]
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            patches = self.tiler.tile(inputs)
            reconstructed = self.network(patches).to(inputs.dtype)
            return TiledReconstruction(inputs, self.tiler.untile(reconstructed, height, width), patches, reconstructed)
        with full_fp32(inputs.device.type):  # on a GPU: no TF32, the maps of the CPU and the exported graph
            return self._reconstruct_in_chunks(inputs, keep_patches, on_chunk)

    def _reconstruct_in_chunks(
        self,
        inputs: torch.Tensor,
        keep_patches: bool,
        on_chunk: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> TiledReconstruction:
        """Eager tiled reconstruction of network inputs ``(B, C, H, W)``: ``patch_batch_size`` patches at a time are
        cut, reconstructed and added into the stitched sums (:meth:`PatchTiler.apply`), so the memory is one chunk
        plus image-sized tensors; tiling first held ``B * L`` patches and as many reconstructions, 16 times the
        image each at stride 32. The network gets the same chunks as the earlier split of all tiled patches, and the
        sums are untile's (bit for bit on the CPU): the same maps."""
        reconstruction, patches, reconstructed = self.tiler.apply(
            inputs, lambda chunk: self.network(chunk).to(inputs.dtype), self.patch_batch_size, keep_patches, on_chunk
        )
        return TiledReconstruction(inputs, reconstruction, patches, reconstructed)

    @torch.no_grad()
    def fit_position_normalization(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit the position normalisation on resized defect-free images, given as batches ``(B, 3, H, W)`` in
        [0, 1] (see :class:`~anomalib_ssimae.models.ssim_ae.anomaly_map.PositionNormalization`).

        Raises:
            ValueError: if the model was built without position normalisation.
        """
        generator = self.anomaly_map_generator
        if generator.position is None:
            msg = "this model has no position normalisation (position_normalization=None)"
            raise ValueError(msg)
        maps = [generator.position_free_map(*self.reconstruct(images)[:2]) for images in batches]
        generator.position.fit(torch.cat(maps))

    @torch.no_grad()
    def fit_frame_check(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit the frame check on resized defect-free images, given as batches ``(B, 3, H, W)`` in [0, 1] (see
        :class:`~anomalib_ssimae.models.ssim_ae.frame_check.FrameCheck`); it reads them as the network does."""
        self.frame_check.fit(self.prepare(images) for images in batches)

    def out_of_distribution(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B,)`` booleans: frames (network inputs ``(B, C, H, W)``) the fitted frame check rejects."""
        return self.frame_check(inputs)

    def anomaly_prediction(
        self, inputs: torch.Tensor, reconstruction: torch.Tensor, check_frames: bool = True
    ) -> InferenceBatch:
        """Anomaly map ``(B, 1, H, W)`` and score ``(B,)`` from a reconstruction (:class:`AnomalyMapGenerator`).
        A frame the fitted frame check calls out of distribution (blank, saturated, inverted, badly exposed) gets
        the raw score :data:`OUT_OF_DISTRIBUTION_SCORE` unless ``check_frames`` is off (validation: its scores fit
        the thresholds and normalisation); its map is left as it is."""
        with full_fp32(inputs.device.type):  # the score's Gaussian blur: no TF32 on a GPU
            anomaly_map, pred_score = self.anomaly_map_generator(inputs, reconstruction)
        if check_frames:
            rejected = self.out_of_distribution(inputs)
            pred_score = torch.where(rejected, torch.full_like(pred_score, OUT_OF_DISTRIBUTION_SCORE), pred_score)
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | InferenceBatch:
        """Training: reconstruct crops (cut from :meth:`prepare`'d images). Eval: tiled anomaly map and score (see
        class docstring)."""
        if self.training:
            inputs = to_model_channels(images, self.in_channels)
            return inputs, self.network(inputs)
        tiled = self.reconstruct(images)
        return self.anomaly_prediction(tiled.inputs, tiled.reconstruction)
