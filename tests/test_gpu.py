"""On a CUDA GPU (skipped where torch sees none; the rest of the suite runs on the GPU too, ``accelerator="auto"``):
what only a GPU shows. A GPU-trained model gives the CPU's maps (TF32 off where images are scored), its exports
load on a machine without a GPU, and the paper-protocol metric takes maps from the GPU (issue 27)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine

from anomalib_ssimae import SsimAe
from anomalib_ssimae.metrics import _PaperProtocolAUROC

from .helpers import EMBEDDED, load_image, quickstart_datamodule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def gpu_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short training on the GPU (256 x 256, 512 crops): the checkpoint."""
    work = tmp_path_factory.mktemp("gpu")
    model = SsimAe(crops_per_epoch=512, batch_size=64, visualizer=False, seed=42)
    engine = Engine(max_epochs=1, default_root_dir=work, logger=False, accelerator="gpu", devices=1,
                    enable_progress_bar=False)  # fmt: skip
    engine.fit(model, datamodule=quickstart_datamodule())
    assert model.device.type == "cuda"
    return Path(engine.trainer.checkpoint_callback.best_model_path)


def test_gpu_maps_equal_the_cpu_maps(gpu_checkpoint: Path) -> None:
    images = torch.cat([load_image(p, (256, 256)) for p in sorted((EMBEDDED / "test" / "pitting").glob("*.png"))[:4]])
    saved = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"  # as after Lightning's set_float32_matmul_precision("high")
    try:
        on_gpu = SsimAe.load_from_checkpoint(gpu_checkpoint, map_location="cuda").eval().model(images.cuda())
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved
    on_cpu = SsimAe.load_from_checkpoint(gpu_checkpoint, map_location="cpu").eval().model(images)
    # TF32 moved maps by about 1e-3 relative; in fp32 the two devices differ by rounding only
    assert (on_gpu.anomaly_map.cpu() - on_cpu.anomaly_map).abs().max() < 1e-4
    assert torch.allclose(on_gpu.pred_score.cpu(), on_cpu.pred_score, atol=1e-4)


def test_torch_export_of_a_gpu_model_loads_without_a_gpu(gpu_checkpoint: Path, tmp_path: Path) -> None:
    model = SsimAe.load_from_checkpoint(gpu_checkpoint, map_location="cuda")
    path = model.to_torch(tmp_path / "export")
    assert model.device.type == "cuda"  # the model goes back where it was
    script = (
        "import sys, torch; m = torch.load(sys.argv[1], weights_only=False)['model'].eval(); "
        "print(next(m.parameters()).device, tuple(m(torch.rand(1, 3, 256, 256)).anomaly_map.shape))"
    )
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["cpu", "(1,", "1,", "256,", "256)"]


def test_paper_protocol_metric_on_the_cpu_takes_gpu_maps() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 1, 64, 64, generator=generator)
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[:, 20:40, 20:40] = True
    on_cpu, mixed = _PaperProtocolAUROC(), _PaperProtocolAUROC()
    on_cpu.update(maps, masks)
    mixed.update(maps.cuda(), masks.cuda())  # compare.job builds the metric on its own, on the CPU
    assert torch.allclose(mixed.compute().cpu(), on_cpu.compute())


def test_a_cpu_generator_draws_crops_and_blocks_for_gpu_images() -> None:
    from anomalib_ssimae.data.augmentation import CropSampler
    from anomalib_ssimae.data.corruption import add_masked_blocks

    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    sampler = CropSampler(batch_size=4, patch_size=32)
    on_cpu = sampler(images, torch.Generator().manual_seed(0))
    on_gpu = sampler(images.cuda(), torch.Generator().manual_seed(0))  # torch.rand(generator=cpu, device=cuda) raised
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-5)  # the same draws: the same crops
    blocked_cpu = add_masked_blocks(on_cpu, generator=torch.Generator().manual_seed(0))[0]
    blocked_gpu = add_masked_blocks(on_gpu, generator=torch.Generator().manual_seed(0))[0]
    assert torch.allclose(blocked_gpu.cpu(), blocked_cpu, atol=1e-5)
