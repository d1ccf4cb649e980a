"""The networks of Bergmann et al. Table 1 and Rádli & Czúni Table 2: parameter counts, shapes, value range."""

import pytest
import torch

from anomalib_ssimae.models.ssim_ae.network import SSIM_AE_EXTENDED_ENCODER, SsimAeNetwork


@pytest.mark.parametrize(
    ("in_channels", "latent_dim", "expected"),
    [(1, 100, 1_048_549), (1, 500, 2_687_349), (3, 100, 1_050_599), (3, 500, 2_689_399)],
)
def test_parameter_count(in_channels: int, latent_dim: int, expected: int) -> None:
    network = SsimAeNetwork(in_channels, latent_dim)
    assert sum(p.numel() for p in network.parameters()) == expected


def test_shapes_and_range() -> None:
    network = SsimAeNetwork(1, 100).eval()
    patches = torch.rand(3, 1, 128, 128)
    latent = network.encoder(patches)
    output = network(patches)
    assert latent.shape == (3, 100, 1, 1)  # the bottleneck is a d-vector
    assert output.shape == (3, 1, 128, 128)
    assert 0 < output.min() and output.max() < 1  # sigmoid output


def test_leaky_relu_slope_and_init() -> None:
    network = SsimAeNetwork(1, 100)
    slopes = {m.negative_slope for m in network.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert all(float(c.bias.detach().abs().max()) == 0 for c in convs)
    assert len(convs) == 18  # 9 encoder + 9 decoder layers


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="in_channels must be 1"):
        SsimAeNetwork(in_channels=2)
    with pytest.raises(ValueError, match="multiple of 16"):
        SsimAeNetwork(patch_size=100)


@pytest.mark.parametrize(
    ("in_channels", "latent_dim", "expected"),
    [(1, 100, 7_188_165), (3, 100, 7_189_767), (1, 500, 20_295_765)],
)
def test_extended_parameter_count(in_channels: int, latent_dim: int, expected: int) -> None:
    network = SsimAeNetwork(in_channels, latent_dim, 128, SSIM_AE_EXTENDED_ENCODER, output_kernel=4)
    assert sum(p.numel() for p in network.parameters()) == expected
    assert network(torch.rand(2, in_channels, 128, 128)).shape == (2, in_channels, 128, 128)


def test_lightning_variants_build_their_networks() -> None:
    import anomalib_ssimae

    counts = {
        name: sum(p.numel() for p in getattr(anomalib_ssimae, name)().model.parameters())
        for name in ("SsimAe", "SsimAeExtended", "SsimDae", "SsimDaeExtended")
    }
    assert counts == {
        "SsimAe": 1_048_549,
        "SsimAeExtended": 7_188_165,
        "SsimDae": 1_048_549,
        "SsimDaeExtended": 7_188_165,
    }
