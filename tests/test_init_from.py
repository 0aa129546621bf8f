"""`model.init_from=CKPT`: the next annotation round starts from the last round's weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seglab.checkpoints import read_checkpoint
from seglab.data.cvat_writer import write_labelmap
from seglab.data.labelmap import SegClass
from seglab.errors import ConfigError
from seglab.models.module import SegmentationModule
from seglab.training import build, run
from tests.helpers import ROOT, TINY, compose_train

HEAD = "net.segmentation_head.0."


def _head(state: dict, name: str) -> torch.Tensor:
    return state[HEAD + name]


def test_init_from_matches_classes_by_name(trained_run: dict, tmp_path: Path, capsys):
    """The next round's label set lost `stone`, gained `rock` and lists the rest in another
    order: shared classes keep their head rows wherever they now sit, `rock` starts fresh."""
    ckpt = trained_run["metrics"]["best_ckpt"]
    before = read_checkpoint(ckpt)["state_dict"]
    other = shutil.copytree(trained_run["export"], tmp_path / "round2")
    write_labelmap(
        other / "labelmap.txt",
        [
            SegClass("background", (0, 0, 0)),
            SegClass("berry", (52, 209, 183)),
            SegClass("rock", (250, 50, 83)),  # stone's pixels, under a new name
            SegClass("leaf", (51, 221, 255)),
        ],
    )
    cfg = compose_train(
        [*TINY, f"data.path={other}", f"run_dir={tmp_path / 'run'}", f"model.init_from={ckpt}"]
    )
    experiment = build(cfg)
    after = experiment.module.state_dict()
    out = capsys.readouterr().out
    assert "kept 3 (background, berry, leaf)" in out
    assert "new 1, trained from scratch (rock)" in out and "dropped 1 (stone)" in out

    old_rows = {"background": 0, "leaf": 1, "stone": 2, "berry": 3}
    new_rows = {"background": 0, "berry": 1, "rock": 2, "leaf": 3}
    for part in ("weight", "bias"):
        old, new = _head(before, part), _head(after, part)
        for name in ("background", "berry", "leaf"):
            assert torch.equal(new[new_rows[name]], old[old_rows[name]]), (part, name)
        assert not torch.equal(new[new_rows["rock"]], old[old_rows["stone"]])
    body = [k for k in before if k.startswith("net.") and not k.startswith(HEAD)]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    # It is a new run: the optimizer is not restored, the epoch count starts at 0.
    assert experiment.ckpt_path is None


def test_init_from_trains_end_to_end(trained_run: dict, tmp_path: Path):
    ckpt = trained_run["metrics"]["best_ckpt"]
    cfg = compose_train(
        [
            *TINY,
            f"data.path={trained_run['export']}",
            f"run_dir={tmp_path}",
            f"model.init_from={ckpt}",
            "trainer.max_epochs=1",
            "test=false",
        ]
    )
    metrics = run(cfg)
    hparams = read_checkpoint(metrics["best_ckpt"])["hyper_parameters"]
    assert "init_from" not in hparams["model"]  # the network, not its history, is stored


def test_init_from_another_network_is_refused(trained_run: dict, tmp_path: Path):
    ckpt = trained_run["metrics"]["best_ckpt"]
    cfg = compose_train(
        [
            *TINY,
            f"data.path={trained_run['export']}",
            f"run_dir={tmp_path}",
            f"model.init_from={ckpt}",
            "model.encoder_name=resnet34",
        ]
    )
    with pytest.raises(ConfigError, match=r"model.init_from=.*not the one this run builds"):
        build(cfg)


def test_init_from_errors_from_the_command_line(trained_run: dict, tmp_path: Path):
    missing = tmp_path / "nope.ckpt"
    command = [
        sys.executable,
        "train.py",
        f"data.path={trained_run['export']}",
        f"model.init_from={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert f"model.init_from={missing}: no such checkpoint file" in result.stderr
    assert "Traceback" not in result.stderr
    ckpt = trained_run["metrics"]["best_ckpt"]
    command[3] = f"model.init_from={ckpt}"
    result = subprocess.run(
        [*command, f"ckpt_path={ckpt}"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "give one" in result.stderr


def test_init_from_keeps_the_source_network_where_auto_would_decide(
    trained_run: dict, tmp_path: Path
):
    """`model.decoder_output_stride: auto` resolved 1 on the tiny export (its outlines are 22%
    of its pixels); a next round from a checkpoint built without the stage builds it likewise,
    instead of refusing the checkpoint for the stage's keys."""
    hparams = read_checkpoint(trained_run["metrics"]["best_ckpt"])["hyper_parameters"]
    assert hparams["model"]["decoder_output_stride"] == 1
    without_stage = {**hparams["model"], "decoder_output_stride": None}
    coarse = SegmentationModule(**{**hparams, "model": without_stage})
    ckpt = tmp_path / "coarse.ckpt"
    torch.save({"state_dict": coarse.state_dict(), "hyper_parameters": dict(coarse.hparams)}, ckpt)
    cfg = compose_train(
        [
            *TINY,
            f"data.path={trained_run['export']}",
            f"run_dir={tmp_path}",
            f"model.init_from={ckpt}",
        ]
    )
    experiment = build(cfg)
    assert experiment.module.hparams["model"]["decoder_output_stride"] is None
    assert torch.equal(
        experiment.module.state_dict()["net.segmentation_head.0.weight"],
        coarse.state_dict()["net.segmentation_head.0.weight"],
    )
