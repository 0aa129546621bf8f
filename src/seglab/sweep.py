"""Hydra multirun support: a failed job does not end the sweep, and the sweep ends with a table.

`run_job` is what `train.py` calls for every job. In a multirun it records a failure (traceback
in `<job dir>/error.txt`, `"status": "failed"` in `metrics.json`) and returns no objective, which
Hydra's basic sweeper passes over and the Optuna sweeper records as a failed trial (with
`max_failure_rate: 1.0`, as `conf/hparams_search/optuna.yaml` sets); a single run still raises.
`SweepSummary` (registered under `hydra.callbacks` in `conf/train.yaml`) then writes
`<sweep dir>/sweep_summary.csv`: one row per job with its overrides, status and final metrics.
"""

from __future__ import annotations

import csv
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from seglab.atomic import atomic_write_text
from seglab.report.sweep_report import SUMMARY_METRICS, collect_jobs, write_sweep_report
from seglab.trackers import tag_mlflow_sweep
from seglab.training import run


def run_job(cfg: DictConfig) -> float | None:
    """Train one job; return `cfg.optimized_metric` for sweepers (None when the job failed)."""
    multirun = _in_multirun()
    if multirun:
        _group_wandb_by_sweep(cfg)
        tag_mlflow_sweep(cfg, _sweep_name(cfg), HydraConfig.get().job.num)
    try:
        metrics = run(cfg)
    except Exception as err:
        _finish_wandb(exit_code=1)
        if not multirun:
            raise
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        # The exception's first line, for sweep_report.html's list of failed jobs.
        error = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        failed = json.dumps({"status": "failed", "error": error}, indent=2) + "\n"
        atomic_write_text(run_dir / "metrics.json", failed)
        print(f"[seglab] job failed; the sweep goes on. Traceback:\n{traceback.format_exc()}",
              file=sys.stderr)  # fmt: skip
        return None
    _finish_wandb(exit_code=0)  # the next job of a sweep must start a new W&B run
    value = metrics.get(cfg.get("optimized_metric") or "")
    return None if value is None else float(value)


class SweepSummary(Callback):
    """Writes `sweep_summary.csv` into the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        path = write_sweep_summary(sweep_dir)
        if path is None:
            return
        with path.open(encoding="utf-8") as f:
            failed = [row["job"] for row in csv.DictReader(f) if row["status"] != "ok"]
        print(f"[seglab] sweep summary: {path}")
        report = write_sweep_report(sweep_dir)
        if report is not None:
            print(f"[seglab] sweep report:  {report}")
        if failed:
            print(f"[seglab] {len(failed)} job(s) failed: {', '.join(failed)} "
                  f"(traceback in {sweep_dir}/<job>/error.txt)")  # fmt: skip


def write_sweep_summary(sweep_dir: Path) -> Path | None:
    """One row per job directory, in job order, with the overrides that tell the jobs apart
    (`seglab.report.sweep_report.collect_jobs`), its status, final metrics and checkpoint."""
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        return None
    rows = []
    for job in jobs:
        row = {"job": job["job"], "status": job["status"], "overrides": job["overrides"]}
        row.update({name: job["metrics"].get(name) for name in SUMMARY_METRICS})
        row["best_ckpt"] = job["metrics"].get("best_ckpt")
        rows.append(row)
    path = sweep_dir / "sweep_summary.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _sweep_name(cfg: DictConfig) -> str:
    """`<task>-<date>-<time>`, from the sweep directory: what a tracker groups a sweep's jobs by."""
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"{cfg.task_name}-{sweep_dir.parent.name}-{sweep_dir.name}"


def _group_wandb_by_sweep(cfg: DictConfig) -> None:
    """One W&B group per sweep (its directory name), unless the user named one."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is not None and not wandb_cfg.get("group"):
        with open_dict(cfg):
            wandb_cfg.group = _sweep_name(cfg)


def _finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")  # only when this process used it
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)
