"""``python benchmarks/compare/run.py --hf-cache`` (issue 9): anomalib's models load timm's pretrained backbone from a local
Hugging Face cache, offline, and a cache without it fails the cell with an error that names what is missing. The
cache is a fake built here, a random resnet18 stored as the hub stores ``timm/resnet18.a1_in1k``: random weights
cannot come from anywhere else, and nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import timm
import torch
from timm.models._hub import save_for_hf

from .benchmark_scripts import benchmark, run_code

RESNET18 = "timm/resnet18.a1_in1k"  # timm's default tag of resnet18, the one anomalib's models get


def fake_hf_cache(cache: Path, repo: str = RESNET18) -> torch.Tensor:
    """A random resnet18 in ``cache`` in the hub's layout (blobs, snapshot links, refs/main); returns its conv1."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    stage = cache.parent / "stage"
    save_for_hf(model, stage, safe_serialization=True)  # model.safetensors and config.json, as in the hub's repo
    folder = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for file in stage.iterdir():
        data = file.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return model.conv1.weight.detach().clone()


# In a fresh interpreter, as in a cell's process (job.py): huggingface_hub reads its environment once, at import.
PEERS_FROM_CACHE = """
import json
import sys
from pathlib import Path

import torch

from benchmarks.compare.cells import PEERS
from benchmarks.compare.job import use_hf_cache

cache, reference = Path(sys.argv[1]), torch.load(sys.argv[2])
weights = use_hf_cache(cache, {init["backbone"] for init, _, _ in PEERS.values()})
import anomalib.models
from huggingface_hub import constants

assert constants.HF_HUB_OFFLINE and constants.HF_HUB_CACHE == str(cache.resolve())
print(json.dumps(list(PEERS)))
for name, (init, _, _) in PEERS.items():
    model = getattr(anomalib.models, name)(**init, pre_trained=True)
    conv1 = [w for n, w in model.model.state_dict().items() if n.endswith("conv1.weight") and w.shape == (64, 3, 7, 7)]
    print(name, len(conv1) == 1 and torch.equal(conv1[0], reference))
print({backbone: str(path.relative_to(cache.resolve())) for backbone, path in weights.items()})
"""


@pytest.mark.slow
def test_peers_load_the_cached_backbone(tmp_path: Path) -> None:
    """Every peer the comparison runs builds its backbone from the cache's weights (the random ones, not ImageNet's)."""
    cache = tmp_path / "hub"
    torch.save(fake_hf_cache(cache), tmp_path / "conv1.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TIMM_"))}
    result = run_code(PEERS_FROM_CACHE, cache, tmp_path / "conv1.pt", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    peers, *lines = result.stdout.strip().splitlines()
    assert len(json.loads(peers)) == 6 and lines[:-1] == [f"{name} True" for name in json.loads(peers)]
    commit = hashlib.sha1(RESNET18.encode()).hexdigest()
    assert lines[-1] == str({"resnet18": f"models--timm--resnet18.a1_in1k/snapshots/{commit}/model.safetensors"})


def test_cache_without_the_backbone_fails_the_cell(tmp_path: Path) -> None:
    """A cache holding another resnet18 tag: the pretrained cell fails at once, naming the repository it lacks, in its
    own folder (a from-scratch cell of the same model and seed is neither skipped nor replaced)."""
    cache = tmp_path / "hub"
    fake_hf_cache(cache, "timm/resnet18.tv_in1k")
    out = tmp_path / "compare"
    args = ["--models", "Padim", "--datasets", "mvtec_ad_grid_mini", "--seeds", "42", "--out", str(out)]
    (tmp_path / "data/mvtec_ad_grid_mini").mkdir(parents=True)  # empty: the cell must fail on the cache first
    ran = benchmark("compare/run.py", *args, "--data-root", tmp_path / "data", "--hf-cache", cache)
    assert ran.returncode == 1, ran.stdout + ran.stderr[-3000:]

    record = json.loads((out / "cells/short/mvtec_ad_grid_mini/Padim-pretrained/seed42.json").read_text())
    assert (record["status"], record["pretrained"]) == ("failed", True)
    assert record["error"] == (
        f"FileNotFoundError: --hf-cache {cache} lacks timm's weights of resnet18: timm/resnet18.a1_in1k "
        "(models--timm--resnet18.a1_in1k/snapshots/<hash in refs/main>/model.safetensors or pytorch_model.bin)"
    )
    assert not (out / "cells/short/mvtec_ad_grid_mini/Padim/seed42.json").exists()


# A cell run in a process that has imported timm, and so huggingface_hub, before it.
CELL_AFTER_TIMM = """
import sys
import timm
from benchmarks.compare.job import main

sys.exit(main(sys.argv[1:]))
"""


def test_cache_set_too_late_fails_the_cell(tmp_path: Path) -> None:
    """In a process that already imported huggingface_hub the cache could not take effect: a clear failure."""
    (tmp_path / "hub").mkdir()
    args = ["Padim", "mvtec_ad_grid_mini", "42", "short", "--out", tmp_path, "--hf-cache", tmp_path / "hub"]
    assert run_code(CELL_AFTER_TIMM, *args).returncode == 1
    record = json.loads((tmp_path / "cells/short/mvtec_ad_grid_mini/Padim-pretrained/seed42.json").read_text())
    assert "must run before huggingface_hub is imported" in record["error"]
