"""The convolutional autoencoders: Bergmann et al. (2019) Table 1 and the extended network of Rádli & Czúni (2021).

Each network is a typed encoder table (:class:`ConvSpec` per layer, then a latent convolution down to a
``latent_dim`` vector), a mirrored decoder, LeakyReLU 0.2, a sigmoid output and Kaiming-normal initialisation as in
the authors' code. Choose one by name: ``NETWORKS["ssim_ae"]`` (Table 1) or ``NETWORKS["extended"]`` (Table 2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class ConvSpec(NamedTuple):
    """One encoder convolution: output channels, square kernel, stride and zero padding, in pixels."""

    out_channels: int
    kernel: int
    stride: int
    padding: int


class NetworkSpec(NamedTuple):
    """A network: its encoder table and the kernel of the output layer (``None`` mirrors the first encoder layer)."""

    encoder: tuple[ConvSpec, ...]
    output_kernel: int | None = None


# Bergmann et al. (2019) Table 1 (and Rádli & Czúni Table 1): the encoder before the latent convolution.
SSIM_AE_ENCODER = tuple(
    ConvSpec(*layer)
    for layer in (
        (32, 4, 2, 1),
        (32, 4, 2, 1),
        (32, 3, 1, 1),
        (64, 4, 2, 1),
        (64, 3, 1, 1),
        (128, 4, 2, 1),
        (64, 3, 1, 1),
        (32, 3, 1, 1),
    )
)
# Rádli & Czúni (2021) §3, Table 2: 3 x 3 convolutions in four stages 32/64/128/256, each a stride-2 convolution and
# two stride-1 convolutions; the latent layer is unchanged.
SSIM_AE_EXTENDED_ENCODER = tuple(ConvSpec(width, 3, stride, 1) for width in (32, 64, 128, 256) for stride in (2, 1, 1))
# The authors' extended network ends in a 4 x 4, stride-2 output layer after 3 x 3 layers.
NETWORKS = {"ssim_ae": NetworkSpec(SSIM_AE_ENCODER), "extended": NetworkSpec(SSIM_AE_EXTENDED_ENCODER, 4)}


def _mirror_decoder(encoder: tuple[ConvSpec, ...], in_channels: int) -> list[tuple[int, int, int, int, int]]:
    """Decoder layers ``(in, out, kernel, stride, padding)`` that mirror ``encoder``; stride-2 layers transpose."""
    channels = [in_channels] + [layer.out_channels for layer in encoder]
    return [
        (channels[i + 1], channels[i], layer.kernel, layer.stride, layer.padding)
        for i, layer in reversed(list(enumerate(encoder)))
    ]


class SsimAeNetwork(nn.Module):
    """A convolutional autoencoder for square patches.

    Args:
        in_channels: 1 (grayscale, as Bergmann for textures) or 3.
        latent_dim: size ``d`` of the bottleneck vector (paper: 100 for textures, 500 for the CPU data).
        patch_size: side of the square input patches; a multiple of 2 ** (stride-2 layers), i.e. 16 for both
            networks (a ``patch_size / 16`` latent convolution then reaches 1 x 1). Paper: 128.
        encoder: the encoder table; default :data:`SSIM_AE_ENCODER` (Table 1), :data:`SSIM_AE_EXTENDED_ENCODER`
            is Table 2.
        output_kernel: kernel of the last (output) transposed convolution; ``None`` mirrors the first encoder layer.

    Shapes: ``(N, in_channels, patch_size, patch_size)`` float in [0, 1] -> same shape, values in (0, 1) (sigmoid).
    Parameters at patch 128, 1 channel, d = 100: 1,048,549 (Table 1); 7,188,165 (Table 2 with ``output_kernel=4``);
    at d = 500: 2,687,349 and 20,295,765.

    Raises:
        ValueError: for ``in_channels`` other than 1 or 3, or a ``patch_size`` the network cannot take.

    Example:
        >>> network = SsimAeNetwork(in_channels=1, latent_dim=100, patch_size=128)
        >>> sum(p.numel() for p in network.parameters())
        1048549
        >>> network(torch.rand(2, 1, 128, 128)).shape
        torch.Size([2, 1, 128, 128])
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int = 100,
        patch_size: int = 128,
        encoder: tuple[ConvSpec, ...] = SSIM_AE_ENCODER,
        output_kernel: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels not in {1, 3}:
            msg = f"in_channels must be 1 (grayscale) or 3 (colour), got {in_channels}"
            raise ValueError(msg)
        if latent_dim < 1:
            msg = f"latent_dim must be at least 1, got {latent_dim}"
            raise ValueError(msg)
        encoder = tuple(ConvSpec(*layer) for layer in encoder)
        downsampling = 2 ** sum(layer.stride == 2 for layer in encoder)
        if patch_size < 1 or patch_size % downsampling:
            msg = f"patch_size must be a positive multiple of {downsampling} for this network, got {patch_size}"
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

    @property
    def output_layer(self) -> nn.Module:
        """The last convolution, whose sigmoid gives the reconstruction."""
        return self.decoder[-2]
