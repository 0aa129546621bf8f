"""The module's hyper-parameters, which a checkpoint stores beside the weights, checked as data.

Prediction, export, evaluation and resume read these from files that may come from anyone; every
value is checked here before anything is built from it (see `registry` for why by key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from seglab.data.intensity import Intensity
from seglab.errors import ConfigError
from seglab.models.plain import plain
from seglab.models.registry import check_loss, check_model, check_optimizer, check_scheduler

# What a checkpoint must carry for seglab to rebuild and use its network.
REQUIRED = ("model", "loss", "optimizer", "classes", "image_size", "mean", "std")
# `intensity` is absent from checkpoints written before it existed: they read as
# `seglab.data.intensity.LEGACY` (see `ModelInfo.from_hparams`).
# `sampling` (`data.sampling`) likewise: absent means `resize`, as every model was trained then.
# `upscale` (`data.upscale`) likewise: absent means True, images were enlarged to fit then.
OPTIONAL = ("scheduler", "ignore_index", "seglab_version", "intensity", "sampling", "upscale")
SAMPLINGS = ("resize", "tile")


def check_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """`hparams` as plain data in the module's argument order, or ConfigError naming the key.

    Keys absent from `hparams` stay absent (the module's defaults apply); unknown keys are
    refused, since nothing seglab writes has them.
    """
    unknown = sorted(str(k) for k in hparams if k not in REQUIRED + OPTIONAL)
    if unknown:
        raise ConfigError(
            f"hyper-parameter {unknown[0]!r} is not one seglab writes; "
            f"expected {list(REQUIRED + OPTIONAL)}"
        )
    checks = {
        "model": check_model,
        "loss": check_loss,
        "optimizer": check_optimizer,
        "classes": _classes,
        "scheduler": check_scheduler,
        "ignore_index": lambda v, k: _integer(v, k, 0, 65535),
        "image_size": lambda v, k: _numbers(v, k, 2, integer=True),
        "mean": _numbers,
        "std": _numbers,
        "seglab_version": _string,
        "intensity": _intensity,
        "sampling": _sampling,
        "upscale": _boolean,
    }
    return {key: check(hparams[key], key) for key, check in checks.items() if key in hparams}


def _classes(value: Any, key: str) -> list[dict[str, Any]]:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if type(value) not in (list, tuple) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of {{name, color}}")
    classes = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"name", "color"}:
            raise ConfigError(f"{where}: expected {{name, color}}, found {item!r:.80}")
        classes.append(
            {
                "name": _string(item["name"], f"{where}.name"),
                "color": _numbers(item["color"], f"{where}.color", 3, integer=True, high=255),
            }
        )
    return classes


def _intensity(value: Any, key: str) -> str | dict[str, list[float]]:
    """The `data.intensity` rule in its stored form (`seglab.data.intensity`)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return Intensity.parse(value, key).to_config()


def _sampling(value: Any, key: str) -> str:
    if value not in SAMPLINGS:
        raise ConfigError(f"{key}={value!r:.80}: expected one of {list(SAMPLINGS)}")
    return value


def _boolean(value: Any, key: str) -> bool:
    if type(value) is not bool:
        raise ConfigError(f"{key}={value!r:.80}: expected true or false")
    return value


def _string(value: Any, key: str) -> str:
    if type(value) is not str:
        raise ConfigError(f"{key}={value!r:.80}: expected a string")
    return value


def _integer(value: Any, key: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"{key}={value!r:.80}: expected an integer in [{low}, {high}]")
    return value


def _numbers(
    value: Any, key: str, length: int | None = None, integer: bool = False,
    high: float | None = None,
) -> list[Any]:  # fmt: skip
    """A list of `length` (any, if None) non-negative numbers, at most `high`."""
    value = plain(value, key)
    kinds = (int,) if integer else (int, float)
    if (
        type(value) is not list
        or not value
        or (length is not None and len(value) != length)
        or any(type(v) not in kinds or v < 0 or (high is not None and v > high) for v in value)
    ):
        kind = "integers" if integer else "numbers"
        count = length or "some"
        raise ConfigError(f"{key}={value!r:.80}: expected {count} non-negative {kind}")
    return value
