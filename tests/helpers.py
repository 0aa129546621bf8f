"""Helpers shared by the tests: the repository root and the real config, composed."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from seglab.config import with_default_experiment

ROOT = Path(__file__).resolve().parents[1]
# Small enough for a CPU test, large enough for a U-Net's five downsamplings.
TINY = [
    "model.encoder_weights=null",  # nothing can be downloaded in the tests
    "data.image_size=[64,64]",
    "data.batch_size=2",
    "data.num_workers=0",
    "model.encoder_name=resnet18",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
]


def compose_train(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The real conf/train.yaml, composed as `python train.py <overrides>` would: with the demo
    preset when the overrides name no data, as train.py does."""
    overrides = with_default_experiment(overrides)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def compose_predict(overrides: list[str]) -> DictConfig:
    """The real conf/predict/predict.yaml, composed as `python predict.py <overrides>` would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "predict"), version_base="1.3"):
        return compose("predict", overrides=overrides)
