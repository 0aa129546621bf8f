"""Metrics against values worked out by hand, with an absent class and ignored pixels."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from seglab.metrics import format_table, metrics_from_confusion

NAMES = ["background", "car", "person", "bike"]


def test_metrics_from_a_known_confusion_matrix():
    # rows = truth, columns = prediction; "bike" is absent from both.
    cm = torch.tensor([[50, 2, 3, 0], [4, 20, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(cm, NAMES)
    iou = {"background": 50 / (55 + 54 - 50), "car": 20 / (25 + 22 - 20), "person": 0 / (0 + 4 - 0)}
    assert m["iou/background"] == pytest.approx(iou["background"])
    assert m["iou/car"] == pytest.approx(iou["car"])
    assert m["iou/person"] == 0.0  # predicted but never true: a real miss, counted as 0
    assert math.isnan(m["iou/bike"])  # absent from both: left out of the mean
    assert m["mIoU"] == pytest.approx(sum(iou.values()) / 3)
    assert m["dice/car"] == pytest.approx(2 * 20 / (25 + 22))
    assert m["pixel_acc"] == pytest.approx(70 / 80)


def test_ignore_pixels_never_count():
    confusion = MulticlassConfusionMatrix(num_classes=2, ignore_index=255, validate_args=False)
    target = torch.tensor([[0, 0, 1, 255, 255]])
    preds = torch.tensor([[0, 1, 1, 1, 0]])
    confusion.update(preds, target)
    m = metrics_from_confusion(confusion.compute(), ["a", "b"])
    assert m["iou/a"] == pytest.approx(1 / 2)
    assert m["iou/b"] == pytest.approx(1 / 2)
    assert m["pixel_acc"] == pytest.approx(2 / 3)


def test_table_lists_every_class_and_miou():
    cm = torch.tensor([[5, 1], [0, 0]])
    m = {f"val/{k}": v for k, v in metrics_from_confusion(cm, ["sky", "kite"]).items()}
    table = format_table(m, ["sky", "kite"])
    kite = next(line for line in table.splitlines() if line.startswith("kite"))
    assert kite.split()[1:] == ["0.0000", "0.0000", "n/a"]  # predicted: IoU 0; no truth: no Acc
    assert "sky" in table
    assert f"{m['val/mIoU']:.4f}" in table
