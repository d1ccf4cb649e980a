"""The composed configs: every configs/model/*.yaml x configs/data/*.yaml pair loads through anomalib's own CLI
(parse + instantiation, as `anomalib train` does before fitting) into the right model for the dataset; the two halves
stay separate; bad arguments are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from anomalib.cli import AnomalibCLI

import anomalib_ssimae
from anomalib_ssimae import SsimAe
from anomalib_ssimae.post_processing import DefectFreePostProcessor

from .helpers import DATA_CONFIGS, MODEL_CONFIGS, REPO, config_args

MODELS = {
    "ssim_ae": "SsimAe",
    "ssim_ae_extended": "SsimAeExtended",
    "ssim_dae": "SsimDae",
    "ssim_dae_extended": "SsimDaeExtended",
}
# dataset config: (input size (height, width), in_channels, latent_dim, max_epochs); paper §5: textures and surfaces
# gray with d = 100, parts d = 500
DATASETS = {
    "mvtec_ad_grid_mini": ((256, 256), 1, 100, 30),
    "magnetic_tile": ((256, 256), 1, 100, 30),
    "bsdata_pitting": ((208, 512), 1, 100, 30),
    "mvtec3d_tire": ((320, 240), 3, 500, 30),
    "hazelnut_toy": ((256, 256), 3, 500, 30),
    "deeppcb": ((384, 384), 1, 500, 30),
    "quickstart": ((208, 512), 1, 100, 6),
}
SHARED = ("..", "shared", "datasets")  # data.root of the six dataset configs, relative to the repository root
# model init_args that depend on the dataset: in the data configs only
DATA_KEYS = {
    "image_size",
    "in_channels",
    "latent_dim",
    "rotation_prob",
    "max_rotation",
    "hflip_prob",
    "vflip_prob",
    "position_normalization",
}
# surfaces that fill the frame at fixed positions get the position normalisation; parts and resized crops do not
POSITION_NORMALIZED = {"quickstart", "bsdata_pitting", "mvtec_ad_grid_mini"}
# loss and map settings a dataset overrides (binarised PCB images: the SSIM loss collapses; defects of a few pixels)
MAP_OVERRIDES = {"deeppcb": {"loss": "l2", "residual": "l2", "score_sigma": 0.0}}


def load(*configs: Path) -> AnomalibCLI:
    """`anomalib train --config ...` up to (not including) fitting: parsed config, model, datamodule, engine."""
    return AnomalibCLI(["train", *config_args(*configs)], run=False)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine creates results/tensorboard in the working directory: not in the repository."""
    monkeypatch.chdir(tmp_path)


def test_config_layout() -> None:
    assert {p.stem for p in MODEL_CONFIGS.glob("*.yaml")} == set(MODELS)
    assert {p.stem for p in DATA_CONFIGS.glob("*.yaml")} == set(DATASETS)
    configs = REPO / "configs"
    assert {p.relative_to(configs).as_posix() for p in configs.rglob("*") if p.is_file()} == {
        *(f"model/{name}.yaml" for name in MODELS),
        *(f"data/{name}.yaml" for name in DATASETS),
        "defect_free_thresholds.yaml",
    }


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_configs_hold_no_dataset_settings(name: str) -> None:
    config = yaml.safe_load((MODEL_CONFIGS / f"{name}.yaml").read_text())
    assert set(config) == {"model", "trainer", "default_root_dir"}
    assert config["model"]["class_path"] == f"anomalib_ssimae.{MODELS[name]}"
    assert not DATA_KEYS & set(config["model"]["init_args"])
    assert "max_epochs" not in config["trainer"]
    assert config["trainer"]["accelerator"] == "auto"  # a GPU where there is one: the configs forced the CPU


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_data_configs_hold_only_dataset_settings(name: str) -> None:
    text = (DATA_CONFIGS / f"{name}.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) == {"model", "data", "trainer"}
    assert config["model"] == {"init_args": config["model"]["init_args"]}  # no class_path: merges into the model's
    assert set(config["model"]["init_args"]) == DATA_KEYS | set(MAP_OVERRIDES.get(name, {}))
    # lists are replaced by a later --config, not appended: logger and callbacks belong to the model configs
    assert not any(isinstance(value, list) for value in config["trainer"].values())
    assert f"# anomalib train --config configs/model/ssim_ae.yaml --config configs/data/{name}.yaml" in text


@pytest.mark.parametrize("data", sorted(DATASETS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_pair_loads_through_the_cli(model: str, data: str) -> None:
    cli = load(MODEL_CONFIGS / f"{model}.yaml", DATA_CONFIGS / f"{data}.yaml")
    size, in_channels, latent_dim, epochs = DATASETS[data]
    assert type(cli.model) is getattr(anomalib_ssimae, MODELS[model])
    assert tuple(cli.model.input_size) == size
    hparams = cli.model.hparams
    assert (hparams.in_channels, hparams.latent_dim) == (in_channels, latent_dim)
    assert hparams.denoising == ("dae" in model)
    assert hparams.network == ("extended" if "extended" in model else "ssim_ae")
    assert hparams.position_normalization == (data in POSITION_NORMALIZED)
    assert (cli.model.model.anomaly_map_generator.position is not None) == (data in POSITION_NORMALIZED)
    defaults = {"loss": "ssim", "residual": "ssim", "score_sigma": 16.0}
    assert {key: hparams[key] for key in defaults} == defaults | MAP_OVERRIDES.get(data, {})
    assert hparams.seed == 42  # reproducible weights, data order and crops (the CLI ignores seed_everything)
    peak = 5e-4 if "extended" in model else 1e-3  # the 25-layer networks collapsed at 1e-3 (issue 27)
    assert (hparams.learning_rate, hparams.lr_schedule, hparams.batch_size) == (peak, "cosine", 16)  # model half
    trainer = cli.config.train.trainer
    assert trainer.max_epochs == epochs
    assert [logger.init_args.name for logger in trainer.logger] == [model]
    assert [callback.class_path for callback in trainer.callbacks] == ["lightning.pytorch.callbacks.EarlyStopping"]
    assert cli.config.train.data.init_args.seed == 42  # a fixed split: `anomalib test` sees the images `train` did
    if data == "quickstart":
        assert trainer.max_time == "00:00:07:00"
        root = REPO / cli.datamodule.root  # relative to the repository root, where the README runs it
        assert cli.datamodule.category == "bsdata_pitting_mini"
        assert len(list((root / "bsdata_pitting_mini" / "train" / "good").glob("*.png"))) == 40
    else:
        assert trainer.max_time is None
        assert (Path(cli.datamodule.root).parts, cli.datamodule.category) == (SHARED, data)


def test_data_config_first_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    """The order matters: dataset init_args before any class_path do not validate (the configs say so)."""
    with pytest.raises(SystemExit):
        load(DATA_CONFIGS / "quickstart.yaml", MODEL_CONFIGS / "ssim_ae.yaml")
    assert "Not a valid subclass of AnomalibModule" in capsys.readouterr().err


def test_defect_free_thresholds_compose_as_a_third_config() -> None:
    cli = load(
        MODEL_CONFIGS / "ssim_dae.yaml",
        DATA_CONFIGS / "mvtec3d_tire.yaml",
        REPO / "configs" / "defect_free_thresholds.yaml",
    )
    post = cli.model.post_processor
    assert isinstance(post, DefectFreePostProcessor)
    assert (post.image_fpr, post.pixel_fpr, post.min_defect_area) == (0.01, 0.001, None)
    assert type(cli.model) is anomalib_ssimae.SsimDae  # the first two files are kept
    assert tuple(cli.model.input_size) == (320, 240)
    assert cli.model.hparams.latent_dim == 500


def test_bad_model_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="smaller than patch_size"):
        SsimAe(image_size=100)
    with pytest.raises(ValueError, match="residual must be one of"):
        SsimAe(residual="l1")
    with pytest.raises(ValueError, match="stride must be"):
        SsimAe(stride=0)
    with pytest.raises(ValueError, match="block_size must be"):
        anomalib_ssimae.SsimDae(block_size=200)
