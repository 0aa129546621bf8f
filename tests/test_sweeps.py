"""Hydra multirun and the Optuna search through train.py: one directory per job, a summary."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, TINY

FAST = [*TINY, "model.encoder_weights=null", "trainer.max_epochs=1", "test=false"]


def sweep(tiny_export: Path, sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "train.py", *args, *FAST, f"data.path={tiny_export}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "sweep_summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_multirun_goes_on_past_a_failed_job_and_summarises(tiny_export: Path, tmp_path: Path):
    # pan refuses 64 px inputs at start-up: a real failure in the middle of a sweep.
    result = sweep(tiny_export, tmp_path, "-m", "model=pan,unet", "logger=wandb")
    rows = summary(tmp_path)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "failed", "model=pan"),
        ("1", "ok", "model=unet"),
    ]
    assert float(rows[1]["val/mIoU"]) >= 0 and Path(rows[1]["best_ckpt"]).is_file()
    assert "needs inputs of at least 128x128" in (tmp_path / "0" / "error.txt").read_text()
    assert (tmp_path / "1" / "metrics.json").is_file()
    assert "1 job(s) failed: 0" in result.stdout
    # The W&B run is grouped by sweep (the failed job stopped before W&B started).
    (history,) = (tmp_path / "1" / "wandb").glob("offline-run-*/*.wandb")
    assert f"train-{tmp_path.parent.name}-{tmp_path.name}".encode() in history.read_bytes()


def test_optuna_search_runs_trials_and_reports_the_best(tiny_export: Path, tmp_path: Path):
    sweep(tiny_export, tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "logger=none")
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all("optimizer.lr=" in r["overrides"] and "model=" in r["overrides"] for r in rows)
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert max(float(r["val/mIoU"]) for r in rows) == float(best.split("best_value:")[1])
