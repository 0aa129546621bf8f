"""budget= / trainer.max_time: the schedule finishes its decay when the time is up, validation
keeps to its share, and the final weights are validated."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from seglab.budget import parse_budget
from seglab.errors import ConfigError
from seglab.models.registry import build_schedulers
from seglab.training import run
from tests.helpers import TINY, compose_train


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), (20, 1200), ("20", 1200)],
)
def test_budget_durations(text: str | int, seconds: float):
    assert parse_budget(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["abc", "0m", "-5m", "20 minutes", True])
def test_bad_budgets_are_refused_with_the_key(text: object):
    with pytest.raises(ConfigError, match="budget="):
        parse_budget(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["cosine", "poly"])
def test_schedules_follow_the_clock_to_their_end(name: str):
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    spent = [0.0]
    config = {"name": name, "min_lr_ratio": 0.01, "warmup_steps": 0}
    (scheduler,) = build_schedulers(config, optimizer, None, clock=lambda: spent[0])
    lrs = []
    for share in (0.0, 0.25, 0.5, 0.75, 1.0, 1.2):
        spent[0] = share
        optimizer.step()
        scheduler["scheduler"].step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == sorted(lrs, reverse=True)  # decays as the budget is spent
    assert lrs[-2] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.01)  # done at the end


def test_step_schedules_without_a_step_count_are_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="scheduler=onecycle"):
        build_schedulers({"name": "onecycle"}, optimizer, None, clock=lambda: 0.0)


def test_a_budget_run_ends_on_time_with_the_lr_decayed(tiny_export: Path, tmp_path: Path):
    metrics = run(
        compose_train(
            [*TINY, f"data.path={tiny_export}", f"run_dir={tmp_path}", "budget=12s",
             "scheduler.min_lr_ratio=0.01", "test=false",
             # no warmup: on a loaded machine (tests run in parallel) 12 s may hold fewer
             # steps than the default 20 of warmup, and the decay is what is tested here
             "scheduler.warmup_steps=0"]
        )
    )  # fmt: skip
    assert metrics["train/epochs"] >= 2  # the budget, not max_epochs, ended the run
    assert metrics["train/seconds"] < 12 + 15  # the time check happens between batches
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-AdamW/encoder")]
    lrs = [float(r["lr-AdamW/encoder"]) for r in rows]
    # the clock drives the decay: it falls step after step and is well under way when the budget
    # ends. Its exact end value is checked with a controlled clock above; here one step stalled by
    # a loaded CI machine can hold seconds of the 12 (a run once logged 16% of the peak last).
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[-1] < 0.5 * max(lrs)
    assert metrics["val/mIoU"] is not None
