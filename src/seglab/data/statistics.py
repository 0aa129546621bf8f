"""`data.mean` / `data.std`: the per-channel statistics the network's inputs are normalised
with (`seglab.preprocessing.normalise`), resolved once and stored in the checkpoint.

- a list: one value per channel, in [0, 1] units;
- `imagenet` (the default): ImageNet's statistics for 3-channel inputs, which the pretrained
  encoders were trained with; for any other channel count, `auto`, said in a line (ImageNet's
  three values have no meaning for a 1- or 5-channel input, and repeating them would shift
  bands of other ranges far off zero);
- `auto`: measured on the training split, each image read as training reads it (the
  `data.intensity` rule, then `model.in_channels`), over all its pixels at its own size.
  Exact: each image contributes a 256-bin histogram per channel, and mean and standard
  deviation come from the summed histograms in float64.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from seglab.console import say
from seglab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMS = "imagenet | auto | [one number per channel]"


def check_statistic(value: Any, key: str) -> str | tuple[float, ...]:
    """A `data.mean` / `data.std` value as `imagenet`, `auto` or a tuple of numbers; a
    ConfigError names `key` otherwise."""
    if value in ("imagenet", "auto"):
        return value
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(np.isfinite(v) and v >= 0 for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ConfigError(f"{key}={value!r:.80}: expected {FORMS}, e.g. {key}=auto")


def resolve_statistics(
    mean: Any,
    std: Any,
    channels: int,
    images: Sequence[Path],
    read: Callable[[Path], np.ndarray],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for `channels`-channel inputs from the configured values (see the module
    docstring); `images` and `read` measure them when `auto` (the training split and the
    training reader)."""
    mean, std = check_statistic(mean, "data.mean"), check_statistic(std, "data.std")
    if channels != 3:
        keys = [k for k, v in (("data.mean", mean), ("data.std", std)) if v == "imagenet"]
        if keys:
            say(f"{'/'.join(keys)}=imagenet is for 3 channels, not {channels}: using auto")
        mean = "auto" if mean == "imagenet" else mean
        std = "auto" if std == "imagenet" else std
    measured = measure(images, read, channels) if "auto" in (mean, std) else None
    mean = IMAGENET_MEAN if mean == "imagenet" else measured[0] if mean == "auto" else mean
    std = IMAGENET_STD if std == "imagenet" else measured[1] if std == "auto" else std
    for key, value in (("data.mean", mean), ("data.std", std)):
        if len(value) != channels:
            raise ConfigError(
                f"{key}={list(value)}: {len(value)} value(s) for {channels}-channel images; "
                f"give one per channel, or {key}=auto to measure them on the training images"
            )
    if any(v <= 0 for v in std):
        raise ConfigError(f"data.std={list(std)}: every value must be positive")
    if measured is not None:
        say(
            f"data.mean/std=auto over {len(images)} training images: mean "
            f"{[round(v, 4) for v in measured[0]]}, std {[round(v, 4) for v in measured[1]]} "
            "(stored in the checkpoint)"
        )
    return tuple(mean), tuple(std)


def measure(
    images: Sequence[Path], read: Callable[[Path], np.ndarray], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of all pixels of `images` (read by `read` as
    (H, W, channels) uint8), in [0, 1] units. A constant channel gets std 1/255 (one grey
    level) rather than 0, which would divide by zero."""
    if not images:
        raise ConfigError("data.mean=auto: no training images to measure")

    def histogram(path: Path) -> np.ndarray:
        image = read(path)
        return np.stack(
            [np.bincount(image[..., c].ravel(), minlength=256) for c in range(channels)]
        )

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        counts = sum(pool.map(histogram, images)).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum(axis=1)
    mean = (counts * values).sum(axis=1) / n
    variance = (counts * values**2).sum(axis=1) / n - mean**2
    std = np.maximum(np.sqrt(np.maximum(variance, 0.0)), 1.0 / 255.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
