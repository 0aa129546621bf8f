"""Scale-out on CPU: DDP equals one process exactly, float32 evaluation under bf16, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from seglab.training import run
from tests.helpers import ROOT, TINY, compose_train


def evaluate(trained_run: dict, run_dir: Path, *overrides: str) -> dict:
    ckpt = trained_run["metrics"]["best_ckpt"]
    export = trained_run["export"]
    cfg = compose_train(
        [*TINY, f"data.path={export}", f"run_dir={run_dir}", "train=false", f"ckpt_path={ckpt}",
         "logger=none", *overrides]
    )  # fmt: skip
    return run(cfg)


def test_ddp_validation_equals_one_process_exactly(trained_run: dict, tmp_path: Path):
    """3 val images on 2 processes: Lightning's DistributedSampler would repeat one image."""
    single = tmp_path / "single"
    evaluate(trained_run, single)
    ddp = tmp_path / "ddp"
    ckpt = trained_run["metrics"]["best_ckpt"]
    result = subprocess.run(
        [sys.executable, "train.py", *TINY, f"data.path={trained_run['export']}",
         "trainer=ddp", "trainer.devices=2", "train=false", f"ckpt_path={ckpt}", "logger=none",
         f"hydra.run.dir={ddp}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr  # two processes really ran
    for stage in ("val", "test"):
        assert (ddp / f"confusion_{stage}.csv").read_text() == (
            single / f"confusion_{stage}.csv"
        ).read_text()
    # One run directory for both ranks, written by rank 0 only.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    assert (
        json.loads((ddp / "metrics.json").read_text())["val/mIoU"]
        == json.loads((single / "metrics.json").read_text())["val/mIoU"]
    )


def test_evaluation_runs_in_float32_under_bf16_mixed(trained_run: dict, tmp_path: Path):
    """Mixed precision speeds training only: val and test score predict.py's float32 forward."""
    fp32 = evaluate(trained_run, tmp_path / "fp32", "trainer.precision=32-true")
    bf16 = evaluate(trained_run, tmp_path / "bf16", "trainer.precision=bf16-mixed")
    for stage in ("val", "test"):
        assert (tmp_path / "bf16" / f"confusion_{stage}.csv").read_text() == (
            tmp_path / "fp32" / f"confusion_{stage}.csv"
        ).read_text()
    assert bf16["val/mIoU"] == fp32["val/mIoU"]


def test_resume_continues_epoch_and_optimizer_state(tiny_export: Path, tmp_path: Path):
    base = [*TINY, f"data.path={tiny_export}", "logger=none", "test=false"]
    first = tmp_path / "first"
    run(compose_train([*base, f"run_dir={first}", "trainer.max_epochs=1"]))
    last = first / "checkpoints" / "last.ckpt"
    steps_per_epoch = torch.load(last, weights_only=True)["global_step"]

    second = tmp_path / "second"
    run(compose_train([*base, f"run_dir={second}", "trainer.max_epochs=2", f"ckpt_path={last}"]))
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1  # the second epoch, not a fresh first one
    assert resumed["global_step"] == 2 * steps_per_epoch
    adam_steps = {float(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert adam_steps == {2.0 * steps_per_epoch}  # AdamW's moments carried over, not restarted
