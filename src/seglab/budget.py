"""Training to a wall-clock budget: `budget=20m` (or Lightning's own `trainer.max_time`).

With a budget the run is planned in time, not epochs: the per-step LR schedules read their
progress from the Trainer's timer, so they finish their decay when the budget ends (see
`SegmentationModule.configure_optimizers`), and `ValidationCadence` spaces validations so that
they cost at most a set share of the training time, always validating the final weights.
Without a budget none of this is active and epochs behave as configured.
"""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta

import lightning as L
from lightning.pytorch.callbacks import Timer

from seglab.console import say
from seglab.errors import ConfigError

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([dhms]))+$")


def parse_budget(value: str | float | int) -> timedelta:
    """`20m`, `1h30m`, `90s`, `1.5h`, or a number of minutes -> a timedelta."""
    if isinstance(value, bool):
        raise ConfigError(f"budget={value!r}: give a duration such as 20m, 1h30m or 90s")
    if isinstance(value, int | float) or re.fullmatch(r"\d+(?:\.\d+)?", str(value).strip()):
        seconds = float(value) * 60
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not _DURATION.match(text):
            raise ConfigError(
                f"budget={value!r}: give a duration such as 20m, 1h30m or 90s "
                "(units d, h, m, s; a bare number is minutes)"
            )
        seconds = sum(
            float(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"budget={value!r}: the duration must be positive")
    return timedelta(seconds=seconds)


def fit_timer(trainer: L.Trainer) -> Timer | None:
    """The Trainer's timer when it has a time limit (`max_time`), else None."""
    for callback in getattr(trainer, "callbacks", ()):  # stand-in trainers of tests have none
        if isinstance(callback, Timer) and callback._duration is not None:
            return callback
    return None


def budget_progress(trainer: L.Trainer) -> float | None:
    """The share of the time budget spent training so far, in [0, 1]; None without a budget."""
    timer = fit_timer(trainer)
    if timer is None:
        return None
    return min(1.0, timer.time_elapsed("train") / timer._duration)


class ValidationCadence(L.Callback):
    """Validate every k epochs, with k chosen so that validation takes at most `share` of the
    training time, measured as the run goes; the last epoch before the budget ends is always
    validated, so the best checkpoint can be the final, fully decayed weights."""

    def __init__(self, share: float = 0.1):
        if not 0.0 < share <= 1.0:
            raise ConfigError(f"validation share={share}: give a fraction in (0, 1]")
        self.share = share
        self._epoch_start = self._val_start = 0.0
        self._train_epoch_s = self._val_s = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_epoch_s = time.monotonic() - self._epoch_start - self._val_s_this_epoch()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.monotonic()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_s = time.monotonic() - self._val_start
        self._plan(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        timer = fit_timer(trainer)
        epoch_s = self._train_epoch_s or math.inf
        if timer is not None and (timer.time_remaining("train") or 0.0) < epoch_s + self._val_s:
            trainer.check_val_every_n_epoch = 1  # the final weights get validated

    def _val_s_this_epoch(self) -> float:
        return self._val_s if self._val_start >= self._epoch_start else 0.0

    def _plan(self, trainer: L.Trainer) -> None:
        if not self._train_epoch_s or fit_timer(trainer) is None or trainer.should_stop:
            return  # nothing to plan after the last validation (its epoch was cut short)
        every = max(1, math.ceil(self._val_s / (self.share * self._train_epoch_s)))
        if every != trainer.check_val_every_n_epoch:
            say(
                f"validation takes {self._val_s:.1f} s per {self._train_epoch_s:.1f} s epoch: "
                f"validating every {every} epoch(s) to keep it under {self.share:.0%} of the budget"
            )
            trainer.check_val_every_n_epoch = every
