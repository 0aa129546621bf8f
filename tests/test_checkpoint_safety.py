"""A checkpoint can describe a network but never run code: crafted hyper-parameters of every
shape are refused, with the key named, by prediction loading, `seglab export` and resume, and
the file their payload tries to write never appears. Unreadable files are called what they are."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate

import seglab
from seglab.checkpoints import CheckpointError, read_checkpoint
from seglab.cli import main as seglab_cli
from seglab.models.module import SegmentationModule
from seglab.models.registry import check_loss
from seglab.prediction.checkpoint import load_checkpoint
from seglab.training import run
from tests.helpers import TINY, compose_train

CPU = torch.device("cpu")
CLASSES = [{"name": n, "color": [i * 60, i * 60, i * 60]} for i, n in enumerate(["bg", "a", "b"])]
GOOD = {
    "model": {"arch": "unet", "encoder_name": "resnet18", "encoder_weights": None},
    "loss": {"name": "ce", "ignore_index": 255},
    "optimizer": {"name": "adamw", "lr": 1e-3},
    "classes": CLASSES,
    "scheduler": {"name": "cosine", "warmup_steps": 0},
    "ignore_index": 255,
    "image_size": [64, 64],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "seglab_version": seglab.__version__,
}


def payload(marker: Path) -> dict[str, Any]:
    """What Hydra's instantiate turns into `Path(marker).write_text("pwned")`."""
    return {
        "_target_": "pathlib.Path.write_text",
        "self": {"_target_": "pathlib.Path", "_args_": [str(marker)]},
        "data": "pwned",
    }


def _loss_target(h: dict, m: Path) -> None:
    h["loss"] = payload(m)


def _nested_term(h: dict, m: Path) -> None:
    h["loss"] = {"name": "weighted_sum", "losses": {"ce": {"name": "ce"}, "evil": payload(m)}}


def _model_kwarg(h: dict, m: Path) -> None:
    h["model"]["decoder_channels"] = payload(m)


def _model_target(h: dict, m: Path) -> None:
    h["model"] = {"_target_": "builtins.open", "file": str(m), "mode": "w"}


def _optimizer_target(h: dict, m: Path) -> None:
    h["optimizer"] = {**payload(m), "lr": 1e-3}


def _scheduler_target(h: dict, m: Path) -> None:
    h["scheduler"] = payload(m)


def _tensor_value(h: dict, m: Path) -> None:
    h["loss"]["class_weights"] = torch.tensor([1.0, 2.0, 3.0])


def _unknown_name(h: dict, m: Path) -> None:
    h["loss"] = {"name": "weighted_sum", "losses": {"ce": {"name": "builtins.open"}}}


def _unlisted_option(h: dict, m: Path) -> None:
    # timm would read this file as weights: smp forwards unknown options to the encoder.
    h["model"]["encoder_name"] = "tu-resnet18"
    h["model"]["checkpoint_path"] = str(m)


# shape -> (how to craft it, what the refusal must say)
SHAPES = {
    "target_in_loss": (_loss_target, r"loss\._target_="),
    "target_in_loss_term": (_nested_term, r"loss\.losses\.evil\._target_="),
    "target_in_model_kwarg": (_model_kwarg, r"model\.decoder_channels=.*found dict"),
    "target_as_model": (_model_target, r"model\._target_='builtins\.open'"),
    "target_in_optimizer": (_optimizer_target, r"optimizer\._target_="),
    "target_in_scheduler": (_scheduler_target, r"scheduler\._target_="),
    "tensor_value": (_tensor_value, r"loss\.class_weights=.*found Tensor"),
    "unknown_registry_name": (
        _unknown_name,
        r"loss\.losses\.ce\.name='builtins\.open' is not a seglab loss term; choose one of",
    ),
    "unlisted_model_option": (_unlisted_option, r"model\.checkpoint_path is not an option"),
}


@pytest.fixture(scope="module")
def good_state() -> dict[str, Any]:
    module = SegmentationModule(**copy.deepcopy(GOOD))
    return {"state_dict": module.state_dict(), "hyper_parameters": copy.deepcopy(GOOD)}


def craft(good_state: dict, shape: str, folder: Path) -> tuple[Path, Path]:
    """The crafted checkpoint of `shape` and the file its payload would write."""
    marker = folder / "pwned.txt"
    state = copy.deepcopy(good_state)
    SHAPES[shape][0](state["hyper_parameters"], marker)
    ckpt = folder / f"{shape}.ckpt"
    torch.save(state, ckpt)
    return ckpt, marker


def test_the_untampered_checkpoint_loads(good_state: dict, tmp_path: Path):
    torch.save(good_state, tmp_path / "good.ckpt")
    network, info = load_checkpoint(tmp_path / "good.ckpt", CPU)
    assert info.names == ["bg", "a", "b"] and not network.training
    hparams = read_checkpoint(tmp_path / "good.ckpt")["hyper_parameters"]
    assert hparams["loss"] == {"name": "ce", "ignore_index": 255}


def test_the_payload_is_live_under_hydra_instantiate(tmp_path: Path):
    """What the refusals below prevent: the old loader's `instantiate` ran this payload."""
    marker = tmp_path / "pwned.txt"
    instantiate(payload(marker))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("shape", SHAPES)
def test_prediction_loading_refuses(good_state: dict, shape: str, tmp_path: Path):
    ckpt, marker = craft(good_state, shape, tmp_path)
    with pytest.raises(CheckpointError, match=SHAPES[shape][1]) as refused:
        load_checkpoint(ckpt, CPU)
    assert "never runs code" in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("shape", SHAPES)
def test_seglab_export_refuses(good_state: dict, shape: str, tmp_path: Path):
    ckpt, marker = craft(good_state, shape, tmp_path)
    onnx = tmp_path / "model.onnx"
    with pytest.raises(CheckpointError, match=SHAPES[shape][1]):
        seglab_cli(["export", f"ckpt={ckpt}", f"output={onnx}"])
    assert not marker.exists() and not onnx.exists()


@pytest.mark.parametrize("shape", SHAPES)
def test_resume_refuses(good_state: dict, shape: str, tiny_export: Path, tmp_path: Path):
    ckpt, marker = craft(good_state, shape, tmp_path)
    cfg = compose_train([*TINY, f"data.path={tiny_export}", f"run_dir={tmp_path / 'run'}",
                         f"ckpt_path={ckpt}", "logger=none", "trainer.max_epochs=1"])  # fmt: skip
    with pytest.raises(CheckpointError, match=SHAPES[shape][1]):
        run(cfg)
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_random_bytes_are_not_a_seglab_checkpoint_and_no_unsafe_advice(tmp_path: Path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())  # fmt: skip
    for load in (lambda: load_checkpoint(junk, CPU), lambda: read_checkpoint(junk, "ckpt_path")):
        with pytest.raises(CheckpointError, match="not a seglab checkpoint") as refused:
            load()
        assert "weights_only" not in str(refused.value)
        assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_a_pickled_object_is_named_and_never_loaded(tmp_path: Path):
    ckpt = tmp_path / "object.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"loss": Path("/etc")}}, ckpt)
    with pytest.raises(CheckpointError, match=r"holds a Python object, pathlib\.\w*Path") as err:
        load_checkpoint(ckpt, CPU)
    assert "weights_only" not in str(err.value)


def test_unknown_hyper_parameters_and_bad_metadata_are_refused(good_state: dict, tmp_path: Path):
    cases = {
        "hyper-parameter 'extra'": {"extra": 1},
        r"classes\[0\]\.color": {"classes": [{"name": "bg", "color": [0, 0, 999]}]},
        r"image_size=": {"image_size": "64"},
        r"optimizer\.lr=.*expected a number": {"optimizer": {"name": "sgd", "lr": "abc"}},
    }
    for i, (message, change) in enumerate(cases.items()):
        state = copy.deepcopy(good_state)
        state["hyper_parameters"].update(change)
        torch.save(state, tmp_path / f"{i}.ckpt")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / f"{i}.ckpt", CPU)


def test_class_weight_methods_pass_only_before_the_data_is_counted():
    config = {"name": "weighted_sum", "class_weights": "auto",
              "losses": {"ce": {"name": "ce", "class_weights": "auto"}}}  # fmt: skip
    assert check_loss(config, resolved=False)["class_weights"] == "auto"
    with pytest.raises(ValueError, match=r"loss\.class_weights='auto': expected null or one"):
        check_loss(config)


def test_a_resumed_callback_state_cannot_pick_the_file_to_evaluate(
    trained_run: dict, tmp_path: Path
):
    """ModelCheckpoint reloads `best_model_path` from the checkpoint it resumes, and the run
    then evaluates that path: a URL there would be downloaded and unpickled by Lightning."""
    last = Path(trained_run["run_dir"]) / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    # The best-checkpoint keeper's state (the other ModelCheckpoint writes last.ckpt).
    (key,) = [k for k in state["callbacks"] if k.startswith("ModelCheckpoint") and "val/" in k]
    state["callbacks"][key]["best_model_path"] = "https://example.invalid/evil.ckpt"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    export, run_dir = trained_run["export"], tmp_path / "run"
    cfg = compose_train([*TINY, f"data.path={export}", f"ckpt_path={crafted}", f"run_dir={run_dir}",
                         "logger=none", "trainer.max_epochs=1"])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="best_model_path=https://example.invalid"):
        run(cfg)  # the run had no epoch left to train, so the crafted path stayed the best
