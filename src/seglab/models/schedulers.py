"""Per-iteration learning-rate schedules with linear warmup, built as `LambdaLR`s."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup, then cosine decay to `min_lr_ratio * lr` at the last step."""
    return _warmup_then(
        optimizer,
        total_steps,
        warmup_steps,
        min_lr_ratio,
        lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    )


def poly(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 0.9,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup, then `(1 - progress) ** power` decay (DeepLab's schedule)."""
    return _warmup_then(
        optimizer,
        total_steps,
        warmup_steps,
        min_lr_ratio,
        lambda progress: (1.0 - progress) ** power,
    )


def _warmup_then(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float,
    decay: Callable[[float], float],
) -> LambdaLR:
    total_steps = max(1, int(total_steps))
    warmup_steps = min(int(warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay(progress)

    return LambdaLR(optimizer, factor)
