"""PyTorch model of the SSIM autoencoder: the network and the tiled inference around it.

Network: Bergmann et al. (2019), "Improving Unsupervised Defect Segmentation by Applying Structural Similarity to
Autoencoders", VISAPP, Table 1; layer table as in Rádli & Czúni (2021) Table 1 and ``shared/reference/methods.md``
§2.2 (encoder of 9 convolutions down to a ``latent_dim`` vector, mirrored decoder, LeakyReLU 0.2, sigmoid output,
Kaiming-normal initialisation as in the authors' code).

Inference (Rádli & Czúni §5): resized image -> grayscale (if ``in_channels == 1``) -> overlapping patches
(``patch_size`` at ``stride``) -> reconstruction of all patches in one batched call -> patches averaged back ->
residual map (1 - SSIM map, Eq. 8) -> anomaly score. All of it is in ``forward``, so export carries it.
"""

from __future__ import annotations

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_ssimae.components.tiling import PatchTiler, axis_runs
from anomalib_ssimae.models.ssim_ae.anomaly_map import AnomalyMapGenerator, residual_map

__all__ = ["SsimAeModel", "SsimAeNetwork", "residual_map", "to_model_channels"]

# (out_channels, kernel, stride, padding) of the encoder convolutions before the latent convolution, paper Table 1.
SSIM_AE_ENCODER = (
    (32, 4, 2, 1),
    (32, 4, 2, 1),
    (32, 3, 1, 1),
    (64, 4, 2, 1),
    (64, 3, 1, 1),
    (128, 4, 2, 1),
    (64, 3, 1, 1),
    (32, 3, 1, 1),
)

# Extended network of Rádli & Czúni (2021) Table 2 / methods.md §2.3: 3 x 3 convolutions in four stages 32/64/128/256,
# each a stride-2 convolution and two stride-1 convolutions; the latent layer is unchanged.
SSIM_AE_EXTENDED_ENCODER = tuple(
    layer for width in (32, 64, 128, 256) for layer in ((width, 3, 2, 1), (width, 3, 1, 1), (width, 3, 1, 1))
)


def _mirror_decoder(encoder: tuple, in_channels: int) -> list[tuple[int, int, int, int, int]]:
    """Decoder layers ``(in, out, kernel, stride, padding)`` that mirror ``encoder``; stride-2 layers transpose."""
    channels = [in_channels] + [layer[0] for layer in encoder]
    return [
        (channels[i + 1], channels[i], kernel, stride, padding)
        for i, (_, kernel, stride, padding) in reversed(list(enumerate(encoder)))
    ]


class SsimAeNetwork(nn.Module):
    """The convolutional autoencoder of Bergmann et al. (2019), Table 1, with a mirrored decoder.

    Args:
        in_channels: 1 (grayscale, as Bergmann for textures) or 3.
        latent_dim: size ``d`` of the bottleneck vector (paper: 100 for textures, 500 for the CPU data).
        patch_size: side of the square input patches; must be a multiple of 16 (four stride-2 layers, then a
            ``patch_size / 16`` latent convolution down to 1 x 1). Paper: 128.
        encoder: the encoder table ``(out_channels, kernel, stride, padding)`` per layer; defaults to
            :data:`SSIM_AE_ENCODER` (Table 1); :data:`SSIM_AE_EXTENDED_ENCODER` is Table 2.
        output_kernel: kernel of the last (output) transposed convolution; ``None`` mirrors the first encoder layer.
            The authors' extended network uses 4 (a 4 x 4, stride-2 output layer after 3 x 3 layers).

    Shapes: ``(N, in_channels, patch_size, patch_size)`` float in [0, 1] -> same shape, values in (0, 1) (sigmoid).
    Parameters at patch 128, 1 channel, d = 100: 1,048,549 (Table 1); 7,188,165 (Table 2 with ``output_kernel=4``);
    at d = 500: 2,687,349 and 20,295,765.
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int = 100,
        patch_size: int = 128,
        encoder: tuple = SSIM_AE_ENCODER,
        output_kernel: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels not in {1, 3}:
            msg = f"in_channels must be 1 (grayscale) or 3 (colour), got {in_channels}"
            raise ValueError(msg)
        downsampling = 2 ** sum(stride == 2 for _, _, stride, _ in encoder)
        if patch_size % downsampling:
            msg = f"patch_size must be a multiple of {downsampling} for this network, got {patch_size}"
            raise ValueError(msg)
        latent_kernel = patch_size // downsampling

        layers: list[nn.Module] = []
        channels = in_channels
        for out_channels, kernel, stride, padding in encoder:
            layers += [nn.Conv2d(channels, out_channels, kernel, stride, padding), nn.LeakyReLU(0.2)]
            channels = out_channels
        layers.append(nn.Conv2d(channels, latent_dim, latent_kernel, 1, 0))  # bottleneck, no activation
        self.encoder = nn.Sequential(*layers)

        layers = [nn.ConvTranspose2d(latent_dim, channels, latent_kernel, 1, 0), nn.LeakyReLU(0.2)]
        for i, (c_in, c_out, kernel, stride, padding) in enumerate(_mirror_decoder(encoder, in_channels)):
            last = i == len(encoder) - 1
            kernel = output_kernel if last and output_kernel is not None else kernel
            conv = nn.ConvTranspose2d if stride == 2 else nn.Conv2d
            # output_padding keeps odd kernels (3 x 3, stride 2) at exactly twice the size.
            extra = {"output_padding": 1} if stride == 2 and kernel % 2 else {}
            layers.append(conv(c_in, c_out, kernel, stride, padding, **extra))
            layers.append(nn.Sigmoid() if last else nn.LeakyReLU(0.2))
        self.decoder = nn.Sequential(*layers)

        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``(N, C, P, P)`` patches."""
        return self.decoder(self.encoder(patches))


def to_model_channels(images: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Convert anomalib's 3-channel batches to the network's channels.

    ``(B, 3, H, W)`` in [0, 1] -> ``(B, in_channels, H, W)``; grayscale uses the ITU-R 601 luma weights (as PIL and
    torchvision), which give the original values back for gray images stored as RGB. Images that already have
    ``in_channels`` channels (training crops, converted before cropping) pass through.
    """
    if images.shape[1] == in_channels:
        return images
    if images.shape[1] != 3:
        msg = f"expected images with 3 or {in_channels} channels, got shape {tuple(images.shape)}"
        raise ValueError(msg)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


class SsimAeModel(nn.Module):
    """SSIM autoencoder with tiled inference (the ``model`` of :class:`anomalib_ssimae.SsimAe`).

    Args:
        in_channels: 1 converts anomalib's RGB batches to grayscale inside the model; 3 keeps colour.
        latent_dim: bottleneck size ``d``.
        patch_size: training crop and inference patch side in pixels.
        stride: inference patch stride in pixels; the last row/column of patches is aligned to the border.
        residual: ``"ssim"``, ``"l2"`` or ``"ssim_l2"`` (see :func:`residual_map`).
        score, score_sigma, score_fraction: the image anomaly score (see :class:`AnomalyMapGenerator`).
        encoder, output_kernel: architecture of the network (see :class:`SsimAeNetwork`).

    ``forward`` in training mode maps crops ``(N, 3, P, P)`` to ``(inputs, reconstruction)``, both
    ``(N, in_channels, P, P)``. In eval mode it maps resized images ``(B, 3, H, W)`` in [0, 1], ``H, W >= patch_size``
    to ``InferenceBatch(pred_score=(B,), anomaly_map=(B, 1, H, W))``; the map is the residual, in [0, 2] for SSIM.
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
        encoder: tuple = SSIM_AE_ENCODER,
        output_kernel: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.anomaly_map_generator = AnomalyMapGenerator(residual, score, score_sigma, score_fraction)
        self.network = SsimAeNetwork(in_channels, latent_dim, patch_size, encoder, output_kernel)
        axis_runs(patch_size, patch_size, stride)  # fail at construction on a bad stride, not at the first test
        self.tiler = PatchTiler(patch_size, stride)

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tiled reconstruction of whole images.

        Returns ``(inputs, reconstruction, input_patches, reconstructed_patches)``: the images in the network's
        channels ``(B, C, H, W)``, their stitched reconstruction ``(B, C, H, W)`` in (0, 1), and the patches
        ``(B * L, C, P, P)`` before and after the network.
        """
        inputs = to_model_channels(images, self.in_channels)
        height, width = inputs.shape[-2:]
        patches = self.tiler.tile(inputs)
        reconstructed = self.network(patches).to(inputs.dtype)
        return inputs, self.tiler.untile(reconstructed, height, width), patches, reconstructed

    def anomaly_prediction(self, inputs: torch.Tensor, reconstruction: torch.Tensor) -> InferenceBatch:
        """Anomaly map ``(B, 1, H, W)`` and score ``(B,)`` from a reconstruction (:class:`AnomalyMapGenerator`)."""
        anomaly_map, pred_score = self.anomaly_map_generator(inputs, reconstruction)
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | InferenceBatch:
        """Training: reconstruct crops. Eval: tiled anomaly map and score (see class docstring)."""
        if self.training:
            inputs = to_model_channels(images, self.in_channels)
            return inputs, self.network(inputs)
        inputs, reconstruction, _, _ = self.reconstruct(images)
        return self.anomaly_prediction(inputs, reconstruction)
