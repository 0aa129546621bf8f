"""Every scheduler config steps through a short run as Lightning drives it, warmup visible."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch

from seglab.models.module import SegmentationModule
from tests.helpers import ROOT, compose_train

SCHEDULERS = sorted(p.stem for p in (ROOT / "conf" / "scheduler").glob("*.yaml"))
STEPS, EPOCH, WARMUP = 20, 5, 4
CLASSES = [{"name": n, "color": [i, i, i]} for i, n in enumerate(["bg", "fg"])]


def lightning_run(name: str, *overrides: str) -> tuple[list[float], list[dict]]:
    """The first group's LR at each batch start (what LearningRateMonitor logs) over a run."""
    cfg = compose_train([f"scheduler={name}", f"scheduler.warmup_steps={WARMUP}",
                         "model.encoder_name=resnet18", "model.encoder_weights=null",
                         "loss.class_weights=null", "model.in_channels=3",
                         "model.decoder_output_stride=null", *overrides])  # fmt: skip
    module = SegmentationModule(
        model=dict(cfg.model), loss=dict(cfg.loss), optimizer=dict(cfg.optimizer),
        scheduler=dict(cfg.scheduler), classes=CLASSES,
    )  # fmt: skip
    module.trainer = SimpleNamespace(estimated_stepping_batches=STEPS)
    (optimizer,), configs = module.configure_optimizers()
    lrs = []
    for step in range(1, STEPS + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        for config in configs:
            if config["interval"] == "step":
                config["scheduler"].step()
            elif step % EPOCH == 0:  # epoch end, after validation
                config["scheduler"].step(0.5)  # a val/mIoU that never improves
    return lrs, configs


def test_the_issue_schedulers_have_configs():
    assert set(SCHEDULERS) >= {"poly", "cosine", "plateau", "onecycle", "none"}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_warms_up_then_follows_its_shape(name: str):
    patience = ["scheduler.patience=1"] if name == "plateau" else []
    lrs, configs = lightning_run(name, "optimizer.lr=0.01", *patience)
    assert all(lr > 0 and lr == lr for lr in lrs)
    warmup = lrs[: WARMUP + 1]
    assert warmup == sorted(warmup) and warmup[0] < warmup[-1]  # linear ramp, visible
    peak = max(lrs)
    assert peak == pytest.approx(0.01)
    after = lrs[WARMUP + 1 :]
    if name in ("cosine", "poly", "onecycle"):
        assert after == sorted(after, reverse=True) and after[-1] < 0.2 * peak
    elif name == "plateau":
        assert after[-1] == pytest.approx(0.005)  # halved once val/mIoU stalled
        assert configs[0]["monitor"] == "val/mIoU" and configs[0]["interval"] == "epoch"
    else:
        assert set(after) == {0.01}
    for config in configs:  # checkpoints hold scheduler state and must load weights-only
        buffer = io.BytesIO()
        torch.save(config["scheduler"].state_dict(), buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)


def test_linear_warmup_ramps_from_lr_over_n_plus_one():
    lrs, _ = lightning_run("cosine", "optimizer.lr=0.01")
    assert lrs[:WARMUP] == pytest.approx([0.01 * k / (WARMUP + 1) for k in range(1, WARMUP + 1)])


def test_without_warmup_the_schedule_starts_at_the_peak():
    lrs, _ = lightning_run("poly", "optimizer.lr=0.01", "scheduler.warmup_steps=0")
    assert lrs[0] == pytest.approx(0.01) and lrs == sorted(lrs, reverse=True)
