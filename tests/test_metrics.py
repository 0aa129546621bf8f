"""Metrics against values worked out by hand, with an absent class and ignored pixels."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from seglab.metrics import CELL, format_table, metrics_from_confusion, write_confusion
from seglab.models.registry import build_loss
from seglab.prediction import load_checkpoint
from seglab.training import run
from tests.helpers import TINY, compose_train

NAMES = ["background", "car", "person", "bike"]
CLASS_NAMES = ["background", "leaf", "stone", "berry"]  # the tiny export's labelmap


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


def test_mean_class_accuracy_and_frequency_weighted_iou_by_hand():
    # rows = truth: background 55 px, car 25 px; person only predicted; bike absent.
    cm = torch.tensor([[50, 2, 3, 0], [4, 20, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(cm, NAMES)
    assert m["acc/background"] == pytest.approx(50 / 55)
    assert m["acc/car"] == pytest.approx(20 / 25)
    assert math.isnan(m["acc/person"]) and math.isnan(m["acc/bike"])  # no true pixel
    assert m["mAcc"] == pytest.approx((50 / 55 + 20 / 25) / 2)
    iou_bg, iou_car = 50 / (55 + 54 - 50), 20 / (25 + 22 - 20)
    assert m["fwIoU"] == pytest.approx((55 * iou_bg + 25 * iou_car + 0 * 0.0) / 80)
    assert m["mDice"] == pytest.approx((2 * 50 / (55 + 54) + 2 * 20 / (25 + 22) + 0.0) / 3)


def test_confusion_matrix_is_written_as_csv_and_a_heat_map(tmp_path: Path):
    cm = torch.tensor([[50, 2, 3, 0], [4, 20, 1, 0], [0, 0, 0, 0], [0, 0, 0, 7]])
    csv_path, png_path = write_confusion(cm, NAMES, tmp_path / "confusion_val")
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["true \\ predicted", *NAMES]
    assert rows[2] == ["car", "4", "20", "1", "0"]
    image = cv2.imread(str(png_path))
    n = len(NAMES)
    assert image.shape[0] > n * CELL and image.shape[1] > n * CELL
    # Bottom-right cell is the last diagonal entry, 7/7 = 1.0: the top of the colour map.
    y, x = image.shape[0] - 8 - CELL + 4, image.shape[1] - 8 - CELL + 4
    top = cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0]
    np.testing.assert_array_equal(image[y, x], top)


def test_a_run_writes_confusion_files_weights_and_a_warmup_in_the_logged_lr(
    tiny_export: Path, tmp_path: Path
):
    """One short training through the real configs with a non-default menu."""
    cfg = compose_train(
        [
            *TINY,
            f"data.path={tiny_export}",
            f"run_dir={tmp_path}",
            "trainer.max_epochs=1",
            "model=fpn",
            "loss=dice_ce",
            "loss.class_weights=auto",
            "optimizer=sgd",
            "optimizer.lr=0.03",
            "optimizer.encoder_lr_mult=0.1",
            "scheduler=plateau",
            "scheduler.warmup_steps=2",
        ]
    )
    metrics = run(cfg)
    assert {"val/mAcc", "val/fwIoU", "test/acc/leaf", "val/dice/berry"} <= set(metrics)
    for stage in ("val", "test"):
        counts = list(csv.reader((tmp_path / f"confusion_{stage}.csv").open()))
        assert counts[0][1:] == CLASS_NAMES and len(counts) == 1 + len(CLASS_NAMES)
        assert cv2.imread(str(tmp_path / f"confusion_{stage}.png")) is not None

    logged = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    decoder = [float(r["lr-SGD/decoder"]) for r in logged if r.get("lr-SGD/decoder")]
    encoder = [float(r["lr-SGD/encoder"]) for r in logged if r.get("lr-SGD/encoder")]
    assert decoder == pytest.approx([0.01, 0.02])  # 4 images / batch 2: both steps warm up
    assert encoder == pytest.approx([0.001, 0.002])

    ckpt = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)
    weights = ckpt["hyper_parameters"]["loss"]["class_weights"]
    assert len(weights) == len(CLASS_NAMES) and all(w >= 0 for w in weights)
    assert ckpt["hyper_parameters"]["loss"]["losses"]["ce"]["class_weights"] == weights
    assert ckpt["hyper_parameters"]["loss"]["losses"]["dice"]["class_weights"] is None
    assert build_loss(ckpt["hyper_parameters"]["loss"]) is not None  # the stored weights rebuild it
    load_checkpoint(metrics["best_ckpt"], torch.device("cpu"))
