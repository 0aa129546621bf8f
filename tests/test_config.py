"""Every option of every config group composes with the real train.yaml and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seglab.data.transforms import build_train_transform
from seglab.models.fine_stage import auto_output_stride
from seglab.models.registry import build_loss, build_model, build_optimizer, build_schedulers
from seglab.precision import resolve_precision
from tests.helpers import ROOT, compose_train

# conf/predict/ holds predict.py's root config, not a group of train.yaml.
GROUPS = sorted(
    p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name not in ("hydra", "predict")
)
# `_`-prefixed files are shared bases pulled in by the options (conf/model/_base.yaml).
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("[!_]*.yaml"))]


def plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def build(group: str, cfg: DictConfig) -> object:
    """What train.py makes of the group, with stand-ins for the objects it would pass in."""
    if group == "hparams_search":  # a global package: it configures Hydra's sweeper
        return build_sweeper(cfg)
    if group == "experiment":  # a global package: a preset of other groups' keys
        return instantiate(cfg.data, augmentation=[], _recursive_=False)
    node = cfg[group]
    if group == "model":  # model, loss, optimizer, scheduler: by registry key, never _target_
        model = plain(node)
        model.pop("init_from")  # weights to start from, taken out by training.build
        if model["in_channels"] == "auto":  # resolved from the scanned data by training.build
            model["in_channels"] = 3
        if model["decoder_output_stride"] == "auto":  # as for data that is all outlines
            model["decoder_output_stride"] = auto_output_stride(
                model["arch"], model["encoder_name"], outline_share=1.0
            )
        return build_model(model, classes=2)
    if group == "loss":
        if isinstance(node.get("class_weights"), str):  # a method: training counts the pixels
            node.class_weights = [1.0, 1.0]
        return build_loss(plain(node))
    if group == "optimizer":
        return build_optimizer(plain(node), torch.nn.Linear(2, 2))
    if group == "scheduler":
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return build_schedulers(plain(node), optimizer, total_steps=10)
    if group == "augmentation":
        return build_train_transform(plain(node.train), [64, 96], node.scale)
    if group == "data":
        return instantiate(node, augmentation=[], _recursive_=False)
    if group in ("callbacks", "logger"):
        return [instantiate(c) for c in (node or {}).values() if c]
    if group == "trainer":  # `precision: auto` is resolved by training.build
        return instantiate(node, precision=resolve_precision(node.precision, node.accelerator))
    return instantiate(node)


def build_sweeper(cfg: DictConfig) -> object:
    """The search space names real groups and keys, and the sampler builds."""
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    for key in sweeper.params:
        group = ROOT / "conf" / key
        assert group.is_dir() or OmegaConf.select(cfg, key) is not None, key
    return instantiate(sweeper.sampler)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group: str, option: str, tmp_path: Path):
    hydra = group == "hparams_search"  # its options only change the hydra node
    preset = group == "experiment"  # a preset sets keys of other groups, not its own
    cfg = compose_train(
        [
            f"{group}={option}",
            f"run_dir={tmp_path}",
            "data.path=unused",  # data=cvat has no default; nothing is read here
            "model.encoder_name=resnet18",
            "model.encoder_weights=null",
            "trainer.accelerator=cpu",  # trainer=gpu composes on a machine without one
        ]
        if group != "model"
        else [f"model={option}", "model.encoder_weights=null", f"run_dir={tmp_path}"],
        return_hydra_config=hydra,
    )
    assert hydra or preset or cfg[group] is not None
    built = build(group, cfg)
    assert built is not None


def test_every_group_is_covered():
    assert {"model", "loss", "optimizer", "scheduler", "callbacks", "trainer"} <= set(GROUPS)
    assert len(OPTIONS) >= 12 + 8 + 3 + 5


def test_defaults_are_the_documented_ones():
    cfg = compose_train([])
    # Chosen by benchmarks/equal_budget.py on real exports (benchmarks/README.md).
    assert cfg.model.arch == "fpn" and cfg.model.encoder_name == "resnet18"
    assert cfg.loss.name == "ce" and cfg.loss.ignore_index == cfg.data.ignore_index
    assert cfg.optimizer.lr == 3e-3 and cfg.scheduler.warmup_steps == 20
    own_data = compose_train(["data.path=/your/export"])  # the demo preset pins its batch
    assert own_data.data.batch_size == 4 and own_data.data.crop_size == "auto"
    assert own_data.data.image_size == "auto"
    assert cfg.model.channels_last == "auto" and cfg.model.decoder_output_stride == "auto"
    assert cfg.trainer.sync_batchnorm is False and "sync_batchnorm" not in cfg.model
    assert cfg.optimizer.encoder_lr_mult == 1.0 and cfg.model.freeze_encoder is False
    assert cfg.loss.class_weights == "enet_sqrt_if_rare"
    assert (cfg.model.decoder_pyramid_channels, cfg.model.decoder_segmentation_channels) == (
        128,
        64,
    )
    assert cfg.callbacks.model_checkpoint.monitor == "val/mIoU"
    assert "RichProgressBar" in cfg.callbacks.progress_bar._target_
