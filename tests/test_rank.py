"""`seglab rank`: which frames to label next."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.metrics import image_miou
from seglab.prediction import load_predictor
from seglab.prediction.ranking import uncertainty
from tests.helpers import ROOT


def test_uncertainty_of_sure_and_unsure_pixels():
    sure = torch.zeros(3, 2, 2)
    sure[0] = 50.0  # class 0 everywhere, p ~ 1
    assert uncertainty(sure) == pytest.approx((0.0, 0.0), abs=1e-6)
    even = torch.zeros(3, 2, 2)  # p = 1/3 each: no margin, maximal entropy
    assert uncertainty(even) == pytest.approx((1.0, 1.0), abs=1e-6)
    two_way = torch.tensor([0.0, 0.0, -50.0])[:, None, None].expand(3, 2, 2)
    margin, entropy = uncertainty(two_way)
    assert margin == pytest.approx(1.0, abs=1e-6)
    assert entropy == pytest.approx(math.log(2) / math.log(3), abs=1e-6)


def test_image_miou_counts_classes_in_truth_or_prediction():
    target = np.array([[0, 0, 1, 255]])
    predicted = np.array([[0, 1, 1, 2]])
    # class 0: 1/2, class 1: 1/2, class 2: never true and its one prediction is ignored
    assert image_miou(target, predicted, 3, 255) == pytest.approx(0.5)


def _rank(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seglab.cli", "rank", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rank_writes_the_ranking_and_the_top_frames(trained_run: dict, tmp_path: Path):
    ckpt = trained_run["metrics"]["best_ckpt"]
    export = trained_run["export"]
    frames = export / "JPEGImages"
    result = _rank(
        [
            f"ckpt={ckpt}",
            f"input={frames}",
            f"output={tmp_path / 'ranking.csv'}",
            "top=2",
            f"copy_to={tmp_path / 'next'}",
            f"labels={export}",
            "progress=false",
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "ranking.csv").open()))
    assert len(rows) == len(list(frames.iterdir()))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    margins = [float(r["margin"]) for r in rows]
    keys = [(float(r["disagreement"]), float(r["margin"])) for r in rows]
    assert keys == sorted(keys, reverse=True)  # least sure first: disagreement, then margin
    assert all(0 <= float(r["disagreement"]) <= 1 and r["miou"] != "" for r in rows)
    top = (tmp_path / "ranking_top2.txt").read_text().split()
    assert top == [r["image"] for r in rows[:2]]
    assert sorted(p.name for p in (tmp_path / "next").iterdir()) == sorted(
        Path(p).name for p in top
    )
    assert "Spearman(margin, labelled frames' mIoU)" in result.stdout

    # The scores are the Predictor's: the first frame's margin, recomputed through the API.
    predictor = load_predictor(ckpt, device="cpu")
    import cv2

    image = cv2.cvtColor(cv2.imread(rows[0]["image"]), cv2.COLOR_BGR2RGB)
    (logits,) = predictor.logits([image])
    assert uncertainty(logits)[0] == pytest.approx(margins[0], abs=1e-5)


def test_rank_errors_are_one_line(trained_run: dict, tmp_path: Path):
    ckpt = trained_run["metrics"]["best_ckpt"]
    result = _rank([f"ckpt={ckpt}"])
    assert result.returncode == 2 and "needs input=" in result.stderr
    assert "Traceback" not in result.stderr
    frames = trained_run["export"] / "JPEGImages"
    result = _rank([f"ckpt={ckpt}", f"input={frames}", "score=loss"])
    assert result.returncode == 2 and "score='loss'" in result.stderr
    result = _rank([f"ckpt={ckpt}", f"input={frames}", "flip_views=false"])
    assert result.returncode == 2 and "order by score=margin" in result.stderr
    assert "Traceback" not in result.stderr
    result = _rank([f"ckpt={ckpt}", f"input={frames}", f"copy_to={tmp_path}"])
    assert result.returncode == 2 and "give top=N too" in result.stderr


def test_readme_rank_command_runs_as_printed(trained_run: dict, tmp_path: Path):
    """README → What to label next: the command as printed, with its placeholders made real."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What to label next", 1)[1].split("```bash\n", 1)[1]
    (command,) = [line for line in section.split("```")[0].splitlines() if line.strip()]
    assert command.startswith("seglab rank ")
    frames = tmp_path / "data" / "task_18" / "frames"
    frames.mkdir(parents=True)
    for src in sorted((trained_run["export"] / "JPEGImages").iterdir()):
        (frames / src.name).write_bytes(src.read_bytes())
    args = (
        command.replace("best.ckpt", str(trained_run["metrics"]["best_ckpt"]))
        .replace("/data/", f"{tmp_path}/data/")
        .split()[2:]
    )
    done = subprocess.run(
        [sys.executable, "-m", "seglab.cli", "rank", *args, "progress=false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "ranking.csv").open()))  # output= defaults to here
    assert len(rows) == len(list(frames.iterdir()))
    top = (tmp_path / "ranking_top50.txt").read_text().split()
    assert len(top) == len(rows)  # fewer frames than top=50: all of them, in rank order
    assert sorted(p.name for p in (tmp_path / "data" / "task_18" / "next").iterdir()) == sorted(
        p.name for p in frames.iterdir()
    )
