"""Segmentation metrics derived from one confusion matrix.

Every metric comes from a single `MulticlassConfusionMatrix`, so DDP needs one reduction and
all numbers agree with each other. Semantics follow MMSegmentation: a class absent from both
prediction and target has IoU NaN and is left out of the mean; `ignore_index` pixels never count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def metrics_from_confusion(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Per-class IoU and Dice, their NaN-skipping means, and pixel accuracy.

    `confusion[t, p]` counts pixels of true class t predicted as p.
    """
    cm = confusion.double()
    tp = cm.diag()
    support = cm.sum(dim=1)  # pixels of each true class
    predicted = cm.sum(dim=0)
    union = support + predicted - tp
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    iou = torch.where(union > 0, tp / union, nan)
    dice = torch.where(union > 0, 2 * tp / (support + predicted), nan)
    total = cm.sum()
    out = {
        "mIoU": _nanmean(iou),
        "mDice": _nanmean(dice),
        "pixel_acc": (tp.sum() / total).item() if total > 0 else math.nan,
    }
    for name, value in zip(class_names, iou.tolist(), strict=False):
        out[f"iou/{name}"] = value
    for name, value in zip(class_names, dice.tolist(), strict=False):
        out[f"dice/{name}"] = value
    return out


def _nanmean(values: torch.Tensor) -> float:
    valid = ~values.isnan()
    return values[valid].mean().item() if valid.any() else math.nan


def format_table(
    metrics: dict[str, float], class_names: Sequence[str], prefix: str = "val/"
) -> str:
    """A plain-text per-class IoU table ending with mIoU, for the console."""
    width = max([len("pixel accuracy"), *map(len, class_names)])
    rows = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}", "-" * (width + 18)]
    for name in class_names:
        iou, dice = metrics[f"{prefix}iou/{name}"], metrics[f"{prefix}dice/{name}"]
        rows.append(f"{name:<{width}}  {_fmt(iou)}  {_fmt(dice)}")
    rows.append("-" * (width + 18))
    rows.append(
        f"{'mIoU':<{width}}  {_fmt(metrics[f'{prefix}mIoU'])}  {_fmt(metrics[f'{prefix}mDice'])}"
    )
    rows.append(f"{'pixel accuracy':<{width}}  {_fmt(metrics[f'{prefix}pixel_acc'])}")
    return "\n".join(rows)


def _fmt(value: float) -> str:
    return f"{'n/a':>7}" if math.isnan(value) else f"{value:7.4f}"
