"""Segmentation metrics derived from one confusion matrix.

Every metric comes from a single `MulticlassConfusionMatrix`, so DDP needs one reduction and
all numbers agree with each other. Semantics follow MMSegmentation: a class absent from both
prediction and target has IoU NaN and is left out of the mean; `ignore_index` pixels never count.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from seglab.atomic import atomic_write, atomic_write_bytes


def metrics_from_confusion(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Per-class IoU, Dice and accuracy, their NaN-skipping means, pixel accuracy and fwIoU.

    `confusion[t, p]` counts pixels of true class t predicted as p. A class's accuracy (recall)
    is NaN when it has no true pixel; its IoU and Dice only when it is also never predicted.
    """
    cm = confusion.double()
    tp = cm.diag()
    support = cm.sum(dim=1)  # pixels of each true class
    predicted = cm.sum(dim=0)
    union = support + predicted - tp
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    iou = torch.where(union > 0, tp / union, nan)
    dice = torch.where(union > 0, 2 * tp / (support + predicted), nan)
    acc = torch.where(support > 0, tp / support, nan)
    total = cm.sum()
    out = {
        "mIoU": _nanmean(iou),
        "mDice": _nanmean(dice),
        "mAcc": _nanmean(acc),
        "pixel_acc": (tp.sum() / total).item() if total > 0 else math.nan,
        # Each class's IoU weighted by its share of true pixels (absent classes weigh 0).
        "fwIoU": (support * iou.nan_to_num()).sum().item() / total.item()
        if total > 0
        else math.nan,
    }
    for key, values in (("iou", iou), ("dice", dice), ("acc", acc)):
        for name, value in zip(class_names, values.tolist(), strict=False):
            out[f"{key}/{name}"] = value
    return out


def confusion_update(
    confusion: np.ndarray, target: np.ndarray, predicted: np.ndarray, ignore_index: int
) -> None:
    """Add one image's pixels to `confusion[true, predicted]`; ignored pixels do not count."""
    n = confusion.shape[0]
    valid = target != ignore_index
    pairs = target[valid].astype(np.int64) * n + predicted[valid]
    confusion += np.bincount(pairs, minlength=n * n).reshape(n, n)


def image_miou(target: np.ndarray, predicted: np.ndarray, num_classes: int, ignore: int) -> float:
    """mIoU of one image over the classes present in its truth or its prediction."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    confusion_update(confusion, target, predicted, ignore)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean()) if present.any() else math.nan


def _nanmean(values: torch.Tensor) -> float:
    valid = ~values.isnan()
    return values[valid].mean().item() if valid.any() else math.nan


SUMMARY = (
    ("mean", "mIoU", "mDice", "mAcc"),
    ("pixel accuracy", None, None, "pixel_acc"),
    ("freq.-weighted IoU", "fwIoU", None, None),
)


def format_table(
    metrics: dict[str, float], class_names: Sequence[str], prefix: str = "val/"
) -> str:
    """A plain-text per-class IoU / Dice / accuracy table, then the means, for the console."""
    width = max([*(len(summary[0]) for summary in SUMMARY), *map(len, class_names)])
    rule = "-" * (width + 27)

    def row(label: str, *keys: str | None) -> str:
        cells = [_fmt(metrics.get(f"{prefix}{k}", math.nan)) if k else " " * 7 for k in keys]
        return (f"{label:<{width}}  " + "  ".join(cells)).rstrip()

    rows = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}", rule]
    rows += [row(name, f"iou/{name}", f"dice/{name}", f"acc/{name}") for name in class_names]
    rows += [rule, *(row(*summary) for summary in SUMMARY)]
    return "\n".join(rows)


def _fmt(value: float) -> str:
    return f"{'n/a':>7}" if math.isnan(value) else f"{value:7.4f}"


def write_confusion(
    confusion: torch.Tensor, class_names: Sequence[str], stem: Path
) -> tuple[Path, Path]:
    """`<stem>.csv` with raw pixel counts and `<stem>.png`, a row-normalised heat map.

    Rows are true classes, columns predicted ones; ignored pixels are not in the matrix.
    """
    counts = confusion.cpu().long().numpy()
    csv_path, png_path = stem.with_suffix(".csv"), stem.with_suffix(".png")
    rows = [["true \\ predicted", *class_names]]
    rows += [[name, *row] for name, row in zip(class_names, counts.tolist(), strict=True)]
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    # Bytes: csv writes its own \r\n line ends. Atomic: a killed run never leaves half a file.
    atomic_write_bytes(csv_path, text.getvalue().encode("utf-8"))
    image = draw_confusion(counts, class_names)
    atomic_write(png_path, lambda partial: _imwrite(partial, image, png_path))
    return csv_path, png_path


FONT = cv2.FONT_HERSHEY_SIMPLEX
CELL = 56  # pixels per matrix cell, room for "1.00"
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (210, 210, 210)


def draw_confusion(counts: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """A BGR heat map of each row's share (recall on the diagonal), class names on both axes.

    A class with no true pixel has a grey row: there is nothing to normalise.
    """
    n = len(class_names)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    label_w = max(_text_size(name, 0.5)[0] for name in class_names) + 16
    title_h = _text_size("predicted", 0.6)[1] + 16
    left, top = title_h + label_w, title_h + label_w
    image = np.full((top + n * CELL + 8, left + n * CELL + 8, 3), 255, np.uint8)

    colors = cv2.applyColorMap(np.round(shares * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    for t in range(n):
        for p in range(n):
            y, x = top + t * CELL, left + p * CELL
            filled = support[t, 0] > 0
            color = tuple(int(c) for c in colors[t, p]) if filled else GREY
            cv2.rectangle(image, (x, y), (x + CELL - 1, y + CELL - 1), color, cv2.FILLED)
            text = f"{shares[t, p]:.2f}" if filled else "-"
            ink = BLACK if not filled or shares[t, p] > 0.6 else WHITE
            _put_centered(image, text, x + CELL // 2, y + CELL // 2, 0.45, ink)
        # True-class names right-aligned left of their row.
        w, h = _text_size(class_names[t], 0.5)
        cv2.putText(
            image,
            class_names[t],
            (left - 8 - w, top + t * CELL + (CELL + h) // 2),
            FONT,
            0.5,
            BLACK,
            1,
            cv2.LINE_AA,
        )

    # Predicted-class names read bottom to top above their column: draw flat, then rotate.
    strip = np.full((CELL * n, label_w, 3), 255, np.uint8)
    for p, name in enumerate(class_names):
        w, h = _text_size(name, 0.5)
        cv2.putText(strip, name, (8, p * CELL + (CELL + h) // 2), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    image[title_h:top, left : left + n * CELL] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    _put_centered(image, "predicted", left + n * CELL // 2, title_h // 2, 0.6, BLACK)
    true_title = np.full((title_h, n * CELL, 3), 255, np.uint8)
    _put_centered(true_title, "true", n * CELL // 2, title_h // 2, 0.6, BLACK)
    image[top : top + n * CELL, :title_h] = cv2.rotate(true_title, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def _text_size(text: str, scale: float) -> tuple[int, int]:
    (w, h), _ = cv2.getTextSize(text, FONT, scale, 1)
    return w, h


def _put_centered(
    image: np.ndarray, text: str, cx: int, cy: int, scale: float, color: tuple[int, ...]
) -> None:
    w, h = _text_size(text, scale)
    cv2.putText(image, text, (cx - w // 2, cy + h // 2), FONT, scale, color, 1, cv2.LINE_AA)


def _imwrite(path: Path, image: np.ndarray, shown: Path) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{shown}: could not write file")
