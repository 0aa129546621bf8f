"""Hydra multirun and the Optuna search through train.py: one directory per job, a summary."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.browser import chromium, severe_messages
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


@pytest.fixture(scope="module")
def failed_and_ok_sweep(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory):
    """pan refuses 64 px inputs at start-up: a real failure in the middle of a sweep."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = sweep(tiny_export, sweep_dir, "-m", "model=pan,unet", "logger=wandb")
    return sweep_dir, result


def test_multirun_goes_on_past_a_failed_job_and_summarises(failed_and_ok_sweep):
    tmp_path, result = failed_and_ok_sweep
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


def test_sweep_report_shows_every_job_in_a_browser(failed_and_ok_sweep):
    """sweep_report.html, opened in Chromium: a row per job, the finished job linked to its
    own report, the failed one listed with its error, the swept value charted, no error."""
    sweep_dir, result = failed_and_ok_sweep
    assert f"sweep report:  {sweep_dir / 'sweep_report.html'}" in result.stdout
    assert (sweep_dir / "1" / "report.html").is_file()
    with chromium() as driver:
        driver.get((sweep_dir / "sweep_report.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["failed", "ok"]
        link = rows[1].find_element(By.TAG_NAME, "a")
        assert link.get_attribute("href") == (sweep_dir / "1" / "report.html").as_uri()
        failure = driver.find_element(By.ID, "failures").text
        assert "model=pan" in failure and "needs inputs of at least 128x128" in failure
        assert len(driver.find_elements(By.CSS_SELECTOR, "#parameters svg circle")) == 1
        # Sorting by val/mIoU descending puts the finished job first, the n/a last.
        header = driver.find_element(By.XPATH, "//table[@id='jobs']//th[text()='val/mIoU']")
        header.click()
        header.click()
        first = driver.find_element(By.CSS_SELECTOR, "#jobs tbody tr td").text
        assert first == "1"
        assert not severe_messages(driver)


def test_optuna_search_runs_trials_and_reports_the_best(tiny_export: Path, tmp_path: Path):
    sweep(tiny_export, tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "logger=none")
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all("optimizer.lr=" in r["overrides"] and "model=" in r["overrides"] for r in rows)
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert max(float(r["val/mIoU"]) for r in rows) == float(best.split("best_value:")[1])
