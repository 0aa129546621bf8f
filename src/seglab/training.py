"""Train and evaluate from a composed Hydra config; `train.py` only composes and calls `run`."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate, to_absolute_path
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from seglab.data.cvat import DatasetError
from seglab.data.datamodule import SegmentationDataModule
from seglab.metrics import format_table, write_confusion
from seglab.models.class_weights import pixel_counts, weights_from_counts
from seglab.models.module import SegmentationModule


@dataclass
class Experiment:
    """What a composed config builds: the objects `run` fits, validates and tests."""

    datamodule: SegmentationDataModule
    module: SegmentationModule
    trainer: L.Trainer
    callbacks: list[L.Callback]
    ckpt_path: str | None  # resume from / evaluate this checkpoint


def build(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> Experiment:
    """Seed, read the data, and instantiate the module, callbacks, loggers and trainer."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    # Not recursive: the augmentation entries are built by the datamodule, in its worker processes.
    datamodule: SegmentationDataModule = instantiate(
        cfg.data,
        augmentation=OmegaConf.to_container(cfg.augmentation.train, resolve=True),
        _recursive_=False,
    )
    classes = [{"name": c.name, "color": list(c.color)} for c in datamodule.classes]
    datamodule.write_splits(run_dir / "splits")
    ckpt_path = to_absolute_path(cfg.ckpt_path) if cfg.ckpt_path else None
    if ckpt_path:
        check_checkpoint_classes(ckpt_path, classes)

    module = SegmentationModule(
        model=_plain(cfg.model),
        loss=loss_config(cfg, datamodule),
        optimizer=_plain(cfg.optimizer),
        scheduler=_plain(cfg.scheduler) or None,
        classes=classes,
        ignore_index=datamodule.ignore_index,
        image_size=list(datamodule.image_size),
        mean=list(datamodule.mean),
        std=list(datamodule.std),
    )
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c]
    callbacks += extra_callbacks
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c]
    if not loggers:  # logger=none: the LR monitor would have nowhere to write, and refuses
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:  # the whole resolved config, not only the module's arguments
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return Experiment(datamodule, module, trainer, callbacks, ckpt_path)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate the best checkpoint, test it if there is a test split; write metrics.json."""
    experiment = build(cfg)
    datamodule, module, trainer = experiment.datamodule, experiment.module, experiment.trainer
    callbacks, ckpt_path = experiment.callbacks, experiment.ckpt_path
    run_dir = Path(cfg.run_dir)
    classes = module.hparams.classes

    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    best_ckpt = (checkpoint.best_model_path if checkpoint else "") or ckpt_path

    metrics: dict[str, Any] = {}
    (val_metrics,) = trainer.validate(module, datamodule=datamodule, ckpt_path=best_ckpt)
    metrics.update(val_metrics)
    if cfg.test and datamodule.has_test:
        (test_metrics,) = trainer.test(module, datamodule=datamodule, ckpt_path=best_ckpt)
        metrics.update(test_metrics)
    metrics = {k: _finite_or_none(v) for k, v in sorted(metrics.items())}
    metrics["best_ckpt"] = str(Path(best_ckpt).resolve()) if best_ckpt else None

    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        names = [c["name"] for c in classes]
        for stage in ("val", "test"):
            if f"{stage}/mIoU" in metrics:
                print(f"\n{stage} metrics ({best_ckpt or 'last weights'}):")
                print(format_table(_nan_for_none(metrics), names, prefix=f"{stage}/"))
                write_confusion(module.last_confusion[stage], names, run_dir / f"confusion_{stage}")
        print(f"\nRun directory:   {run_dir.resolve()}")
        print(f"Best checkpoint: {metrics['best_ckpt']}")
        if metrics["best_ckpt"]:
            print(f"Predict with:    python predict.py ckpt={metrics['best_ckpt']} input=<images>")
    return metrics


def loss_config(cfg: DictConfig, datamodule: SegmentationDataModule) -> dict[str, Any]:
    """The loss config with `class_weights: auto|median|inverse` replaced by the numbers.

    The numbers, not the recipe, go into the checkpoint, so it rebuilds the same loss.
    """
    method = cfg.loss.get("class_weights")
    if not isinstance(method, str):
        return _plain(cfg.loss)
    counts = datamodule.scan_report.pixels.get("train") if datamodule.scan_report else None
    if counts is None:
        train = datamodule.dataset("train")
        counts = pixel_counts(
            lambda i: train.load(i)[1], len(train), len(datamodule.classes), datamodule.ignore_index
        )
    weights = weights_from_counts(counts, method)
    names = [c.name for c in datamodule.classes]
    print(f"[seglab] class weights ({method}): {dict(zip(names, weights, strict=True))}")
    cfg = copy.deepcopy(cfg)  # the caller's config keeps the recipe
    cfg.loss.class_weights = weights  # terms that read ${loss.class_weights} follow
    return _plain(cfg.loss)


def check_checkpoint_classes(ckpt_path: str, classes: list[dict[str, Any]]) -> None:
    """Refuse a checkpoint trained on another label set, naming the differences."""
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    hparams = torch.load(ckpt_path, map_location="cpu", weights_only=True).get(
        "hyper_parameters", {}
    )
    trained = [(c["name"], tuple(c["color"])) for c in hparams.get("classes", [])]
    current = [(c["name"], tuple(c["color"])) for c in classes]
    if trained != current:
        raise DatasetError(
            f"{ckpt_path}: checkpoint was trained on classes {[n for n, _ in trained]} "
            "but the data "
            f"has {[n for n, _ in current]} (names, colours and order must match). "
            "Use a checkpoint trained on this labelmap, or fix data.labelmap"
        )


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a class absent from both prediction and target is written as null."""
    value = float(value)
    return None if math.isnan(value) else value


def _nan_for_none(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: math.nan if v is None else v for k, v in metrics.items() if k != "best_ckpt"}
