"""What train.py does with a composed config before anything is built: pick the demo preset when
no data is named, and check the values users set, so a typo fails in a second with its key named
instead of minutes later deep inside the optimizer or the data loader."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from seglab.budget import parse_budget
from seglab.errors import ConfigError
from seglab.precision import LIGHTNING_PRECISIONS

DEMO_PRESET = "experiment=demo"
# Command-line arguments that name the data: with none of them, train.py trains the demo.
_DATA_ARGS = ("data.path=", "data=", "experiment=", "+experiment=")


def with_default_experiment(args: Sequence[str]) -> list[str]:
    """`python train.py [overrides]` without `data.path=`, `data=` or `experiment=` runs the
    demo preset; anything naming the data is left exactly as typed. Flags (`-m`, `--cfg job`)
    and their values pass through."""
    args = list(args)
    if any(arg.lstrip("+~").startswith(_DATA_ARGS) for arg in args):
        return args
    return [*args, DEMO_PRESET]


def _number(low: float | None = None, high: float | None = None, integer: bool = False,
            low_open: bool = False) -> Callable[[Any], str | None]:  # fmt: skip
    """A check that returns what is wrong with a value, or None."""

    def check(value: Any) -> str | None:
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return f"expected {kind}, found {value!r} ({type(value).__name__})"
        if not math.isfinite(value):
            return f"expected a finite number, found {value!r}"
        if low is not None and (value <= low if low_open else value < low):
            return f"expected {kind} {'>' if low_open else '>='} {low}, found {value!r}"
        if high is not None and value > high:
            return f"expected {kind} <= {high}, found {value!r}"
        return None

    return check


def _image_size(value: Any) -> str | None:
    if value == "auto":
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 32 or v % 32 for v in value)
    ):
        return f"expected [height, width], positive multiples of 32, found {value!r}"
    return None


def _intensity(value: Any) -> str | None:
    from seglab.data.intensity import Intensity

    try:
        Intensity.parse(value)
    except ConfigError as err:
        return str(err)  # names the sub-key too (data.intensity.range=...)
    return None


def _statistic(value: Any, key: str) -> str | None:
    from seglab.data.statistics import check_statistic

    try:
        check_statistic(value, key)
    except ConfigError as err:
        return str(err).removeprefix(f"{key}=")
    return None


def _workers(value: Any) -> str | None:
    return None if value == "auto" else _number(0, integer=True)(value)


def _crop_pixels(value: Any) -> str | None:
    return None if value == "auto" else _number(64 * 64, integer=True)(value)


def _tracking_uri(value: Any) -> str | None:
    """An MLflow store: a bare path would be MLflow's legacy file store (which MLflow 3.18
    refuses unless MLFLOW_ALLOW_FILE_STORE=true), and a SQLite file in a missing folder fails
    only after the data is read and the model built."""
    if not isinstance(value, str) or not (
        re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", value) or value.startswith("databricks")
    ):
        return f"expected a URI such as sqlite:///mlflow.db or http://host:5000, found {value!r}"
    if value.startswith("sqlite:///"):
        folder = Path(value.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            return f"no such folder {folder} for the SQLite file {value!r}; create it first"
    return None


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda value: None if value is None else check(value)


# key -> check; a key absent from the config (an option not chosen) is not checked.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    "seed": _optional(_number(0, integer=True)),
    "data.image_size": _image_size,
    "data.crop_size": _optional(_image_size),
    "data.crop_pixels": _optional(_crop_pixels),
    "data.batch_size": _number(1, integer=True),
    "data.num_workers": _workers,
    "data.val_fraction": _number(0.0, 1.0, low_open=True),
    "data.split_seed": _number(0, integer=True),
    "data.ignore_index": _number(0, 65535, integer=True),
    "data.intensity": _intensity,
    "data.sampling": lambda v: (
        None if v in ("resize", "tile") else f"expected resize or tile, found {v!r}"
    ),
    "data.rare_class_windows": _number(0.0, 1.0),
    "data.repeat_threshold": _optional(_number(0.0, 1.0, low_open=True)),
    "data.tile_cache_mb": _number(0.0),
    "data.mean": lambda v: _statistic(v, "data.mean"),
    "data.std": lambda v: _statistic(v, "data.std"),
    "model.in_channels": lambda v: None if v == "auto" else _number(1, 512, integer=True)(v),
    "model.decoder_output_stride": lambda v: (
        None if v in ("auto", None, 1, 2, 4) else f"expected auto, null, 1, 2 or 4, found {v!r}"
    ),
    "optimizer.lr": _number(0.0, low_open=True),
    "optimizer.weight_decay": _number(0.0),
    "optimizer.encoder_lr_mult": _number(0.0),
    "optimizer.momentum": _number(0.0, 1.0),
    "scheduler.warmup_steps": _optional(_number(0, integer=True)),
    "scheduler.min_lr_ratio": _number(0.0, 1.0),
    "scheduler.power": _number(0.0, low_open=True),
    "trainer.max_epochs": _optional(_number(-1, integer=True)),
    "trainer.precision": lambda v: (
        None
        if str(v) in ("auto", *LIGHTNING_PRECISIONS)
        else f"expected auto, 32-true, bf16-mixed or 16-mixed, found {v!r}"
    ),
    "trainer.devices": lambda v: None if v == "auto" else _number(1, integer=True)(v),
    "trainer.accumulate_grad_batches": _number(1, integer=True),
    "trainer.gradient_clip_val": _optional(_number(0.0, low_open=True)),
    "callbacks.early_stopping.patience": _number(0, integer=True),
    "logger.mlflow.tracking_uri": _tracking_uri,
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every value of the wrong type or out of range, with its key."""
    problems = []
    for key, check in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:  # an option this config does not have
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        problem = check(value)
        if problem:
            problems.append(f"{key}: {problem}")
    if cfg.get("budget") is not None:
        try:
            parse_budget(cfg.budget)
        except ConfigError as err:
            problems.append(str(err))
    named = {problem.split(":")[0] for problem in problems}  # one message per key
    problems += [p for p in _registry_problems(cfg) if p.split("=")[0] not in named]
    if problems:
        raise ConfigError(
            "invalid configuration (fix these on the command line, e.g. optimizer.lr=3e-4):\n  "
            + "\n  ".join(problems)
        )


_ABSENT = object()


def _registry_problems(cfg: DictConfig) -> list[str]:
    """The model, loss, optimizer and schedule, checked as the module will check them (names in
    seglab's registries, options of the right kind), before minutes go into reading data."""
    from seglab.models.registry import check_loss, check_model, check_optimizer, check_scheduler

    checks = {
        "model": check_model,
        "loss": lambda node: check_loss(node, resolved=False),
        "optimizer": check_optimizer,
        "scheduler": check_scheduler,
    }
    problems = []
    for key, check in checks.items():
        node = cfg.get(key)
        if node is None:
            continue
        node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        if key == "model" and isinstance(node, dict):
            problems += _init_from_problems(node.pop("init_from", None), cfg.get("ckpt_path"))
            for option in ("in_channels", "decoder_output_stride"):  # resolved from the data
                if node.get(option) == "auto":
                    node.pop(option)
        try:
            check(node)
        except ConfigError as err:
            problems.append(str(err))
    return problems


def _init_from_problems(init_from: Any, ckpt_path: Any) -> list[str]:
    """`model.init_from`: an existing file, and not together with a resume (`ckpt_path`)."""
    if init_from is None:
        return []
    if not isinstance(init_from, str) or not Path(to_absolute_path(init_from)).is_file():
        return [f"model.init_from={init_from}: no such checkpoint file (give a seglab .ckpt)"]
    if ckpt_path:
        return [
            f"model.init_from={init_from} and ckpt_path={ckpt_path}: give one; ckpt_path resumes "
            "a run (optimizer and schedule too), init_from starts a new run from its weights"
        ]
    return []
