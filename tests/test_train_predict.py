"""End to end: train through the real Hydra config, then predict through the real predict.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seglab.data.cvat_writer import write_labelmap
from seglab.data.errors import DatasetError
from seglab.data.labelmap import SegClass
from seglab.models.factory import ModelConfigError, create_model
from seglab.prediction import load_predictor
from seglab.sweep import run_job
from seglab.training import run
from tests.helpers import ROOT, TINY, compose_train, read_wandb_records

CLASS_NAMES = ["background", "leaf", "stone", "berry"]


def test_training_writes_metrics_and_a_self_describing_checkpoint(trained_run: dict):
    saved = trained_run["metrics_json"]
    for stage in ("val", "test"):
        assert 0.0 <= saved[f"{stage}/mIoU"] <= 1.0
        for name in CLASS_NAMES:
            assert f"{stage}/iou/{name}" in saved
    best = Path(saved["best_ckpt"])
    assert best.is_file() and best.parent == trained_run["run_dir"] / "checkpoints"
    assert (trained_run["run_dir"] / "checkpoints" / "last.ckpt").is_file()
    assert (trained_run["run_dir"] / "csv" / "metrics.csv").is_file()

    hparams = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert [c["name"] for c in hparams["classes"]] == CLASS_NAMES
    assert hparams["classes"][1]["color"] == [51, 221, 255]
    assert hparams["image_size"] == [64, 64]
    assert hparams["model"]["arch"] == "fpn"  # the default model


def test_predict_py_writes_index_colour_and_overlay(
    trained_run: dict, tiny_export: Path, tmp_path: Path
):
    # A folder with a nested image of another size: outputs mirror it at the input's exact size.
    images = tmp_path / "in"
    (images / "nested").mkdir(parents=True)
    for src in sorted((tiny_export / "JPEGImages").glob("*.jpg"))[:2]:
        (images / src.name).write_bytes(src.read_bytes())
    odd = cv2.resize(cv2.imread(str(src)), (90, 50))
    cv2.imwrite(str(images / "nested" / "odd size.png"), odd)
    out = tmp_path / "out"

    result = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"ckpt={trained_run['metrics']['best_ckpt']}",
            f"input={images}",
            f"output={out}",
            "device=cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "Predicted 3 image(s)" in result.stdout

    inputs = sorted(p.relative_to(images).with_suffix("") for p in images.rglob("*.*"))
    assert len(inputs) == 3
    for rel in inputs:
        source = cv2.imread(str(next(images.glob(f"{rel}.*"))))
        index = cv2.imread(str(out / f"{rel}_index.png"), cv2.IMREAD_UNCHANGED)
        color = cv2.imread(str(out / f"{rel}_color.png"))
        overlay = cv2.imread(str(out / f"{rel}_overlay.jpg"))
        assert index.shape == source.shape[:2] and index.dtype == np.uint8
        assert color.shape == overlay.shape == source.shape
        assert index.max() < len(CLASS_NAMES)
        # The colour PNG is the index PNG painted with the labelmap colours.
        palette = np.array([[0, 0, 0], [51, 221, 255], [250, 50, 83], [52, 209, 183]], np.uint8)
        np.testing.assert_array_equal(color[..., ::-1], palette[index])


def test_train_py_command_line_with_deeplab_and_dice_ce(tiny_export: Path, tmp_path: Path):
    """The documented command, as a user types it, on a tiny export."""
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "model=deeplabv3plus",
            "loss=dice_ce",
            *TINY,
            f"data.path={tiny_export}",
            "trainer.max_epochs=1",
            "test=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "val/mIoU" in metrics and "test/mIoU" not in metrics
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert f"Run directory:   {tmp_path}" in result.stdout
    assert "mIoU" in result.stdout and "berry" in result.stdout


def test_wandb_logger_runs_offline(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Offline, no login: history, config, per-class tables, masked predictions, checkpoint."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train(
        [
            *TINY,
            "logger=[csv,wandb]",
            "logger.wandb.log_model=true",
            f"data.path={tiny_export}",
            f"run_dir={tmp_path}",
            "trainer.max_epochs=1",
            "test=false",
            "~callbacks.early_stopping",
        ]
    )
    assert run_job(cfg) is not None  # as train.py runs it: the W&B run is finished after it
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # both loggers ran
    (offline_run,) = (tmp_path / "wandb").glob("offline-run-*")
    (history,) = offline_run.glob("*.wandb")
    records = read_wandb_records(history)
    logged = {
        item.key or "/".join(item.nested_key)
        for r in records
        if r.HasField("history")
        for item in r.history.item
    }
    for key in ("val/mIoU", "val/iou/berry", "train/loss_step"):
        assert key in logged, key
    assert "val/per_class/_type" in logged  # the per-class table, logged as a nested value
    config = {
        item.key or "/".join(item.nested_key)
        for r in records
        if r.HasField("config")
        for item in r.config.update
    }
    assert {"model", "run_dir"} <= config, config  # the resolved config
    artifacts = [r.artifact.name for r in records if r.HasField("artifact")]
    assert any(name.startswith("model-") for name in artifacts), artifacts  # log_model
    media = offline_run / "files" / "media"
    assert list((media / "images" / "mask" / "val").glob("predictions_*.mask.png"))
    assert list((media / "table" / "val").glob("per_class_*.table.json"))


def test_checkpoint_from_another_label_set_is_refused(
    trained_run: dict, tiny_export: Path, tmp_path: Path
):
    other = shutil.copytree(tiny_export, tmp_path / "other")
    classes = [
        SegClass("background", (0, 0, 0)),
        SegClass("leaf", (51, 221, 255)),
        SegClass("rock", (250, 50, 83)),
        SegClass("berry", (52, 209, 183)),
    ]
    write_labelmap(other / "labelmap.txt", classes)
    cfg = compose_train(
        [
            *TINY,
            f"data.path={other}",
            f"run_dir={tmp_path / 'run'}",
            "train=false",
            f"ckpt_path={trained_run['metrics']['best_ckpt']}",
        ]
    )
    with pytest.raises(
        DatasetError,
        match=r"trained on classes \['background', 'leaf', 'stone', "
        r"'berry'\] but the data has \['background', 'leaf', 'rock', 'berry'\]",
    ):
        run(cfg)


def test_evaluate_only_reproduces_the_saved_metrics(
    trained_run: dict, tiny_export: Path, tmp_path: Path
):
    cfg = compose_train(
        [
            *TINY,
            f"data.path={tiny_export}",
            f"run_dir={tmp_path}",
            "train=false",
            f"ckpt_path={trained_run['metrics']['best_ckpt']}",
        ]
    )
    metrics = run(cfg)
    assert metrics["val/mIoU"] == pytest.approx(trained_run["metrics"]["val/mIoU"], abs=1e-6)
    assert metrics["test/mIoU"] == pytest.approx(trained_run["metrics"]["test/mIoU"], abs=1e-6)


def test_a_run_that_ends_mid_epoch_finishes(tiny_export: Path, tmp_path: Path):
    """`trainer.max_steps` shorter than an epoch: no validation ran when training stops, and
    early stopping, checked at the epoch's end by Lightning's default, failed the whole run
    with a traceback. It is checked after validations only (`conf/callbacks/default.yaml`)."""
    cfg = compose_train(
        [*TINY, f"data.path={tiny_export}", f"run_dir={tmp_path}", "+trainer.max_steps=1"]
    )
    metrics = run(cfg)
    assert 0.0 <= metrics["val/mIoU"] <= 1.0
    # No validation during fit, so no best checkpoint: the final weights are saved and evaluated.
    assert metrics["best_ckpt"] == str((tmp_path / "checkpoints" / "last.ckpt").resolve())
    assert load_predictor(metrics["best_ckpt"]).num_classes >= 2  # predict.py can use it


def test_predictor_rejects_a_checkpoint_without_metadata(tmp_path: Path):
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(ValueError, match="lacks seglab metadata"):
        load_predictor(bare)


def test_model_errors_list_the_choices_and_offline_hint():
    with pytest.raises(ModelConfigError, match="choose one of .*'deeplabv3plus'"):
        create_model("deeplabv4", classes=2, encoder_weights=None)
    with pytest.raises(ModelConfigError, match="choose one of .*'resnet18'"):
        create_model("unet", classes=2, encoder_name="resnet1800", encoder_weights=None)
    # HF_HUB_OFFLINE=1 (conftest) makes the download fail at once, as it does without a network.
    with pytest.raises(RuntimeError, match="model.encoder_weights=null"):
        create_model("unet", classes=2, encoder_name="resnet18", encoder_weights="imagenet")
