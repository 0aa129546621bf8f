"""Train and evaluate from a composed Hydra config; `train.py` only composes and calls `run`."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate, to_absolute_path
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from seglab.atomic import atomic_write_text
from seglab.budget import ValidationCadence, parse_budget
from seglab.checkpoints import read_checkpoint
from seglab.config import validate
from seglab.console import say
from seglab.data.class_weights import RARE_PIXEL_SHARE
from seglab.data.datamodule import SegmentationDataModule
from seglab.data.errors import DatasetError
from seglab.data.sizes import resolve_crop_pixels
from seglab.metrics import format_table
from seglab.models.fine_stage import OUTLINE_SHARE_FOR_FINE_STAGES, auto_output_stride
from seglab.models.init_from import init_from_checkpoint, source_model
from seglab.models.module import SegmentationModule
from seglab.precision import resolve_precision
from seglab.report import write_run_report
from seglab.report.facts import write_run_facts
from seglab.trackers import log_run_files

# With a time budget, validation may take at most this share of the training time.
VALIDATION_SHARE = 0.1


@dataclass
class Experiment:
    """What a composed config builds: the objects `run` fits, validates and tests."""

    datamodule: SegmentationDataModule
    module: SegmentationModule
    trainer: L.Trainer
    callbacks: list[L.Callback]
    ckpt_path: str | None  # resume from / evaluate this checkpoint


def build(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> Experiment:
    """Check the config, seed, read the data, and instantiate the module, callbacks, loggers
    and trainer."""
    validate(cfg)  # before any data is read: a typo'd value fails in a second, its key named
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    timed = cfg.get("budget") is not None or bool(cfg.trainer.get("max_time"))
    # Not recursive: the augmentation entries are built by the datamodule, in its worker processes.
    datamodule: SegmentationDataModule = instantiate(
        cfg.data,
        augmentation=OmegaConf.to_container(cfg.augmentation.train, resolve=True),
        scale_range=list(cfg.augmentation.scale),
        in_channels=cfg.model.get("in_channels", 3),
        crop_pixels=resolve_crop_pixels(cfg.data.get("crop_pixels"), timed),
        _recursive_=False,
    )
    classes = [{"name": c.name, "color": list(c.color)} for c in datamodule.classes]
    datamodule.write_splits(run_dir / "splits")
    ckpt_path = to_absolute_path(cfg.ckpt_path) if cfg.ckpt_path else None
    if ckpt_path:
        check_checkpoint_classes(ckpt_path, classes)

    model = _plain(cfg.model)
    init_from = model.pop("init_from", None)  # weights to start from, not part of the network
    model["in_channels"] = datamodule.channels  # `auto` resolved; the checkpoint stores a number
    if model.get("decoder_output_stride") == "auto":  # an init_from network must match its source
        model["decoder_output_stride"] = (
            source_model(to_absolute_path(init_from)).get("decoder_output_stride")
            if init_from
            else resolve_output_stride(model, datamodule.outline_share)
        )
    module = SegmentationModule(
        model=model,
        loss=loss_config(cfg, datamodule),
        optimizer=_plain(cfg.optimizer),
        scheduler=_plain(cfg.scheduler) or None,
        classes=classes,
        ignore_index=datamodule.ignore_index,
        image_size=list(datamodule.image_size),
        mean=list(datamodule.mean),
        std=list(datamodule.std),
        intensity=datamodule.intensity.to_config(),
        sampling=datamodule.sampling.sampling,
        upscale=datamodule.upscale,
    )
    if init_from:
        mapping = init_from_checkpoint(module.net, module.class_names, to_absolute_path(init_from))
        say(f"model.init_from={init_from}: classes {mapping.describe()}")
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c]
    callbacks += extra_callbacks
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c]
    if not loggers:  # logger=none: the LR monitor would have nowhere to write, and refuses
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    budget: dict[str, Any] = {}
    if cfg.get("budget") is not None:
        # The clock, not epochs, ends the run; early stopping would cut the schedule short.
        budget = {"max_time": parse_budget(cfg.budget), "max_epochs": -1}
        callbacks = [c for c in callbacks if not isinstance(c, EarlyStopping)]
    if timed:
        callbacks.append(ValidationCadence(share=VALIDATION_SHARE))
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=precision, **budget
    )
    for logger in loggers:  # the whole resolved config, not only the module's arguments
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return Experiment(datamodule, module, trainer, callbacks, ckpt_path)


def resolve_output_stride(model: dict[str, Any], outline_share: float | None) -> int | None:
    """`model.decoder_output_stride: auto` decided from the export (`auto_output_stride`) and
    printed; the checkpoint stores the outcome."""
    stride = auto_output_stride(model["arch"], model.get("encoder_name", ""), outline_share)
    if outline_share is not None:
        say(
            f"model.decoder_output_stride=auto -> {stride} ({outline_share:.1%} of the training "
            f"pixels lie within 2 px of another class; {OUTLINE_SHARE_FOR_FINE_STAGES:.0%} or more "
            "adds stages at 1/2 and full scale to a 1/4-scale decoder); set it to null, 2 or 1 "
            "to choose"
        )
    return stride


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate the best checkpoint, test it if there is a test split; write metrics.json,
    run.json and report.html."""
    run_started = time.perf_counter()
    experiment = build(cfg)
    datamodule, module, trainer = experiment.datamodule, experiment.module, experiment.trainer
    callbacks, ckpt_path = experiment.callbacks, experiment.ckpt_path
    run_dir = Path(cfg.run_dir)
    classes = module.hparams.classes

    metrics: dict[str, Any] = {}
    if cfg.train:
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        seconds = time.perf_counter() - started
        images = trainer.global_step * datamodule.batch_size * trainer.accumulate_grad_batches
        metrics["train/seconds"] = round(seconds, 1)
        metrics["train/images_per_s"] = round(images * trainer.world_size / seconds, 3)
        metrics["train/epochs"] = trainer.current_epoch
    checkpoint = next(
        (c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None), None
    )  # the best-checkpoint keeper, not last.ckpt's
    best_ckpt = (checkpoint.best_model_path if checkpoint else "") or ckpt_path
    if cfg.train and not best_ckpt and checkpoint is not None and checkpoint.dirpath:
        # No validation ran during fit (trainer.max_steps ended it within the first epoch), so
        # no checkpoint was written: keep the trained weights for predict.py all the same.
        best_ckpt = str(Path(checkpoint.dirpath) / "last.ckpt")
        say(f"no validation ran before training stopped: saving the final weights to {best_ckpt}")
        trainer.save_checkpoint(best_ckpt)
    if best_ckpt and _written_by(checkpoint, best_ckpt) and not Path(best_ckpt).is_file():
        # A run killed between saving a new best (which removes the old one) and last.ckpt
        # resumes with the old best's path in its state; the weights it trained are in last.
        last = Path(checkpoint.dirpath) / "last.ckpt"
        say(f"{best_ckpt} was removed when a later best was saved; evaluating {last}")
        best_ckpt = str(last)
    if best_ckpt and best_ckpt != ckpt_path and not _written_by(checkpoint, best_ckpt):
        # Reloaded from the resumed checkpoint's callback state: any path, even a URL that
        # Lightning would download and unpickle. Checked like ckpt_path before it is read.
        read_checkpoint(best_ckpt, key="best_model_path")

    (val_metrics,) = trainer.validate(module, datamodule=datamodule, ckpt_path=best_ckpt)
    metrics.update(val_metrics)
    if cfg.test and datamodule.has_test:
        (test_metrics,) = trainer.test(module, datamodule=datamodule, ckpt_path=best_ckpt)
        metrics.update(test_metrics)
    metrics = {k: _finite_or_none(v) for k, v in sorted(metrics.items())}
    metrics["best_ckpt"] = str(Path(best_ckpt).resolve()) if best_ckpt else None

    if trainer.is_global_zero:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        names = [c["name"] for c in classes]
        for stage in ("val", "test"):
            if f"{stage}/mIoU" in metrics:
                print(f"\n{stage} metrics ({best_ckpt or 'last weights'}):")
                print(format_table(_nan_for_none(metrics), names, prefix=f"{stage}/"))
        train = {k.split("/")[1]: v for k, v in metrics.items() if k.startswith("train/")}
        if train:
            train["precision"] = trainer.precision  # `auto` resolved
        write_run_facts(run_dir, cfg, datamodule, dict(module.hparams), train,
                        time.perf_counter() - run_started)  # fmt: skip
        report = _write_report(run_dir) if cfg.get("report", True) else None
        print(f"\nRun directory:   {run_dir.resolve()}")
        print(f"Best checkpoint: {metrics['best_ckpt']}")
        if report:
            print(f"Report:          {report.resolve()}")
        if metrics["best_ckpt"]:
            print(f"Predict with:    python predict.py ckpt={metrics['best_ckpt']} input=<images>")
        confusion = [run_dir / f"confusion_{stage}.png" for stage in ("val", "test")]
        run_files = [metrics["best_ckpt"], run_dir / "metrics.json", run_dir / "report.html"]
        log_run_files(trainer.loggers, [*run_files, *confusion])  # MLflow artifacts
    return metrics


def _write_report(run_dir: Path) -> Path | None:
    """report.html; a failure to draw it is reported, not raised: the trained checkpoint and
    metrics.json are already written, and `seglab report RUN_DIR` can try again."""
    try:
        return write_run_report(run_dir)
    except Exception as err:
        say(f"report.html was not written ({type(err).__name__}: {err}); "
            f"retry with: seglab report {run_dir}")  # fmt: skip
        return None


def loss_config(cfg: DictConfig, datamodule: SegmentationDataModule) -> dict[str, Any]:
    """The loss config with `class_weights: auto|median|inverse|enet|enet_sqrt` (or either
    `*_if_rare`) replaced by the numbers (or null: `*_if_rare` on data without a rare class).

    The numbers, not the recipe, go into the checkpoint, so it rebuilds the same loss.
    """
    method = cfg.loss.get("class_weights")
    if not isinstance(method, str):
        return _plain(cfg.loss)
    weights = datamodule.class_weights(method)
    names = [c.name for c in datamodule.classes]
    if weights is None:
        share = f"{RARE_PIXEL_SHARE:.0%}"
        say(f"class weights ({method}): none (every class has at least {share} of the "
            f"training pixels); set loss.class_weights={method.removesuffix('_if_rare')} to weight "
            "them anyway")  # fmt: skip
    else:
        say(f"class weights ({method}): {dict(zip(names, weights, strict=True))}")
    cfg = copy.deepcopy(cfg)  # the caller's config keeps the recipe
    cfg.loss.class_weights = weights  # terms that read ${loss.class_weights} follow
    return _plain(cfg.loss)


def check_checkpoint_classes(ckpt_path: str, classes: list[dict[str, Any]]) -> None:
    """Refuse a checkpoint that is not seglab's (`read_checkpoint`: before Lightning unpickles
    it) or that was trained on another label set, naming the differences."""
    hparams = read_checkpoint(ckpt_path, key="ckpt_path")["hyper_parameters"]
    trained = [(c["name"], tuple(c["color"])) for c in hparams.get("classes", [])]
    current = [(c["name"], tuple(c["color"])) for c in classes]
    if trained != current:
        raise DatasetError(
            f"{ckpt_path}: checkpoint was trained on classes {[n for n, _ in trained]} "
            "but the data "
            f"has {[n for n, _ in current]} (names, colours and order must match). "
            "Use a checkpoint trained on this labelmap, or fix data.labelmap"
        )


def _written_by(checkpoint: ModelCheckpoint | None, path: str) -> bool:
    """Whether `path` is a local file in the folder `checkpoint` writes this run's files to."""
    if checkpoint is None or not checkpoint.dirpath or "://" in path:
        return False
    return Path(path).resolve().parent == Path(checkpoint.dirpath).resolve()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a class absent from both prediction and target is written as null."""
    value = float(value)
    return None if math.isnan(value) else value


def _nan_for_none(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: math.nan if v is None else v for k, v in metrics.items() if k != "best_ckpt"}
