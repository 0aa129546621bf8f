"""Learning-rate schedules, each with an optional linear warmup counted in optimizer steps.

Every factory takes the optimizer and the run's total number of optimizer steps and returns
Lightning's scheduler configs (`{"scheduler", "interval", ...}`), so a schedule also says when it
steps: poly, cosine and onecycle per iteration, plateau per epoch on a validation metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

SchedulerConfigs = list[dict[str, Any]]
Clock = Callable[[], float]  # the share of a time budget spent so far, 0 to 1


def cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    clock: Clock | None = None,
) -> SchedulerConfigs:
    """Linear warmup, then cosine decay to `min_lr_ratio * lr` at the last step (or when
    `clock`, the share of a time budget spent, reaches 1)."""
    return _per_step(
        optimizer,
        total_steps,
        warmup_steps,
        min_lr_ratio,
        lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
        clock,
    )


def poly(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 0.9,
    min_lr_ratio: float = 0.0,
    clock: Clock | None = None,
) -> SchedulerConfigs:
    """Linear warmup, then `(1 - progress) ** power` decay (DeepLab's schedule); progress in
    steps, or in the share of a time budget spent (`clock`)."""
    return _per_step(
        optimizer,
        total_steps,
        warmup_steps,
        min_lr_ratio,
        lambda progress: (1.0 - progress) ** power,
        clock,
    )


def constant(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> SchedulerConfigs:
    """The optimizer's own LR throughout, after an optional warmup."""
    if warmup_steps <= 0:
        return []
    return [{"scheduler": LinearWarmup(optimizer, warmup_steps), "interval": "step"}]


def onecycle(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
) -> SchedulerConfigs:
    """Smith's one-cycle: from `lr / div_factor` up to `lr` in `warmup_steps` (default 30% of
    the run), then down to `lr / div_factor / final_div_factor`; momentum moves inversely.

    The peak is each parameter group's own LR, so `optimizer.encoder_lr_mult` still applies.
    Both phases follow `anneal_strategy` (`linear` for a linear warmup).
    """
    # One spare step: torch raises if stepped past total_steps (e.g. after a resume).
    total = max(1, int(total_steps)) + 1
    # torch peaks at step pct_start * total - 1; the other schedules peak at step warmup_steps.
    pct_start = 0.3 if warmup_steps is None else min(1.0, (max(1, int(warmup_steps)) + 1) / total)
    scheduler = OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy,
        cycle_momentum=cycle_momentum,
    )
    return [{"scheduler": scheduler, "interval": "step"}]


def plateau(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    monitor: str = "val/mIoU",
    mode: str = "max",
    factor: float = 0.5,
    patience: int = 5,
    min_lr: float = 0.0,
) -> SchedulerConfigs:
    """Multiply the LR by `factor` when `monitor` has not improved for `patience` epochs."""
    scheduler = WarmupPlateau(
        optimizer, warmup_steps, mode=mode, factor=factor, patience=patience, min_lr=min_lr
    )
    return [{"scheduler": scheduler, "interval": "epoch", "monitor": monitor}]


class LinearWarmup(LRScheduler):
    """Ramp each group's LR linearly up to its own value, then leave the LR alone.

    Leaving it alone is what lets it run beside an epoch-wise schedule such as plateau.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int):
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step < self.warmup_steps:
            return [base * _warmup(step, self.warmup_steps) for base in self.base_lrs]
        if step == self.warmup_steps:
            return list(self.base_lrs)
        return [group["lr"] for group in self.optimizer.param_groups]


class WarmupPlateau(ReduceLROnPlateau):
    """`ReduceLROnPlateau` that first ramps the LR up over `warmup_steps` optimizer steps.

    One scheduler rather than two, so the logged LR appears once: the ramp runs from an
    optimizer step hook, the plateau logic from Lightning's per-epoch `step(metric)`.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, **kwargs: Any):
        super().__init__(optimizer, **kwargs)
        self.warmup_steps = int(warmup_steps)
        self.warmup_done = 0
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self._apply_warmup()
        optimizer.register_step_post_hook(self._after_optimizer_step)

    def _after_optimizer_step(self, *_: Any) -> None:
        if self.warmup_done < self.warmup_steps:
            self.warmup_done += 1
            self._apply_warmup()

    def _apply_warmup(self) -> None:
        if self.warmup_steps <= 0:
            return
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs, strict=True):
            group["lr"] = (
                peak * _warmup(self.warmup_done, self.warmup_steps)
                if self.warmup_done < self.warmup_steps
                else peak
            )


def _warmup(step: int, warmup_steps: int) -> float:
    """Factor of the LR at `step` < `warmup_steps`: 1/(n+1), 2/(n+1), ..., then 1."""
    return (step + 1) / (warmup_steps + 1)


def _per_step(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float,
    decay: Callable[[float], float],
    clock: Clock | None = None,
) -> SchedulerConfigs:
    """With a `clock` (a time budget) the decay follows whichever ends first, the budget or
    the `total_steps` (0 = unknown: the budget alone)."""
    total_steps = max(0, int(total_steps))
    if clock is None:
        total_steps = max(1, total_steps)
    warmup_steps = min(int(warmup_steps), max(0, total_steps - 1)) if total_steps else warmup_steps
    warmup_end: list[float] = []  # with a clock: the budget share spent when the warmup ended

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps) if total_steps else 0
        if clock is not None:
            if not warmup_end:
                warmup_end.append(min(clock(), 0.5))
            spent = (clock() - warmup_end[0]) / (1.0 - warmup_end[0])
            progress = max(progress, spent)
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay(min(1.0, progress))

    return [{"scheduler": LambdaLR(optimizer, factor), "interval": "step"}]
