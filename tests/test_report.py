"""report.html: written by every run, built from the run directory alone, self-contained, and
rendered by a real headless Chromium (images decoded, one row per class, curves drawn).

SEGLAB_SCREENSHOTS=FOLDER also saves the rendered report as FOLDER/report.png.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from seglab.data.datamodule import SegmentationDataModule
from seglab.metrics import image_miou
from seglab.prediction import load_predictor
from tests.browser import broken_images, chromium, severe_messages
from tests.helpers import ROOT
from tests.serving import SEGLAB


def test_every_run_writes_a_self_contained_report(trained_run: dict):
    run_dir = trained_run["run_dir"]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    # Nothing is fetched: no remote or relative URL, every image inline.
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "url(" not in html and "@import" not in html
    sources = re.findall(r"<img [^>]*src=\"([^\"]+)\"", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    facts = json.loads((run_dir / "run.json").read_text())
    assert [c["name"] for c in facts["classes"]] == ["background", "leaf", "stone", "berry"]
    assert facts["data"]["images"] == {"train": 4, "val": 3, "test": 2}
    assert sum(facts["data"]["pixels"]["train"]) > 0
    assert f"val mIoU <b>{trained_run['metrics']['val/mIoU']:.4f}</b>" in html


def test_curves_hold_each_validation_of_the_fit(trained_run: dict):
    """The history's last val mIoU is the one the best (only) checkpoint was chosen by: read
    after the module logged it, not one epoch late."""
    history = json.loads((trained_run["run_dir"] / "history.json").read_text())
    (epoch,) = history["epochs"]
    assert epoch["val_mIoU"] == pytest.approx(trained_run["metrics"]["val/mIoU"], abs=1e-6)
    assert epoch["train_loss"] > 0 and history["steps"] and history["steps"][0][3] > 0


def test_per_image_scores_are_those_of_predict(trained_run: dict):
    """val_images.csv scores the module's validation predictions; the Predictor (predict.py)
    on the same files must give the same per-image mIoU."""
    with (trained_run["run_dir"] / "val_images.csv").open() as f:
        rows = {r["image"]: float(r["mIoU"]) for r in csv.DictReader(f)}
    dataset = SegmentationDataModule(str(trained_run["export"])).dataset("val")
    predictor = load_predictor(trained_run["metrics"]["best_ckpt"], "cpu")
    assert len(rows) == len(dataset) == 3
    for i, sample in enumerate(dataset.samples):
        image, truth = dataset.load(i)
        predicted = predictor.predict(image)
        expected = image_miou(truth, predicted, len(predictor.info.names), 255)
        assert rows[sample.id] == pytest.approx(expected, abs=1e-4)
    gallery = json.loads((trained_run["run_dir"] / "gallery" / "gallery.json").read_text())
    worst = [e for e in gallery if e["kind"] == "worst"]
    assert worst[0]["mIoU"] == pytest.approx(min(rows.values()), abs=1e-4)


def test_seglab_report_redraws_a_run_directory(trained_run: dict, tmp_path: Path):
    run_dir = tmp_path / "copied_run"
    shutil.copytree(trained_run["run_dir"], run_dir)
    (run_dir / "report.html").unlink()
    result = subprocess.run([SEGLAB, "report", str(run_dir)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Wrote {run_dir / 'report.html'}"
    assert 'id="classes-val"' in (run_dir / "report.html").read_text(encoding="utf-8")


def test_seglab_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path):
    result = subprocess.run([SEGLAB, "report", str(tmp_path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{tmp_path}: neither a run directory (no metrics.json)" in result.stderr


def test_report_renders_in_chromium(trained_run: dict):
    run_dir, names = trained_run["run_dir"], ["background", "leaf", "stone", "berry"]
    with chromium(width=1200, height=2400) as driver:
        driver.get((run_dir / "report.html").as_uri())
        assert broken_images(driver) == []
        for stage in ("val", "test"):
            rows = driver.find_elements(By.CSS_SELECTOR, f"#classes-{stage} tbody tr")
            assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == names
        lines = driver.find_elements(By.CSS_SELECTOR, "#curves svg polyline")
        assert lines and all(len(p.get_attribute("points").split()) >= 2 for p in lines)
        assert driver.find_elements(By.CSS_SELECTOR, "#gallery-worst img")
        # Sorting the val table by IoU puts the best class first.
        ious = {
            r.find_element(By.TAG_NAME, "td").text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in driver.find_elements(By.CSS_SELECTOR, "#classes-val tbody tr")
        }
        header = driver.find_element(By.XPATH, "//table[@id='classes-val']//th[text()='IoU']")
        header.click()
        header.click()  # descending
        first = driver.find_element(By.CSS_SELECTOR, "#classes-val tbody tr td").text
        assert ious[first] == max(ious.values(), key=lambda v: -1 if v == "n/a" else float(v))
        assert severe_messages(driver) == []
        if os.environ.get("SEGLAB_SCREENSHOTS"):
            folder = Path(os.environ["SEGLAB_SCREENSHOTS"])
            folder.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(folder / "report.png"))
