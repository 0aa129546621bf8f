"""Each benchmark script runs its --quick path on tiny inputs and writes well-formed results.

Correctness only: the tables and JSON are checked, never the timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def run_benchmark(name: str, output: Path, *args: str) -> tuple[str, dict]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--output",
         str(output), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["benchmark"] == name and result["machine"]["cores"] >= 1
    assert all(
        row["median_img_s"] > 0 and row["min_img_s"] <= row["max_img_s"] for row in result["rows"]
    )
    return done.stdout, result


def test_mask_conversion(tmp_path: Path):
    stdout, result = run_benchmark("mask_conversion", tmp_path / "r.json", "--size", "64")
    assert {row["path"] for row in result["rows"]} == {"decode only", "seglab", "lookup only"}
    assert "| 32 | seglab |" in stdout


def test_train_overhead(tmp_path: Path):
    stdout, result = run_benchmark(
        "train_overhead", tmp_path / "r.json", "--size", "64", "--steps", "2", "--warmup", "1",
        "--repeats", "1", "--override", "model.encoder_name=resnet18",
    )  # fmt: skip
    rows = {row["path"]: row for row in result["rows"]}
    assert set(rows) == {"plain PyTorch", "seglab"} and rows["plain PyTorch"]["ratio"] == 1.0
    assert "| seglab |" in stdout and result["encoder"] == "resnet18"


def test_data_pipeline(tmp_path: Path):
    stdout, result = run_benchmark(
        "data_pipeline", tmp_path / "r.json", "--size", "64", "--images", "16", "--repeats", "1",
        "--override", "model.encoder_name=resnet18",
    )  # fmt: skip
    tables = {(row["table"], row["path"]) for row in result["rows"]}
    assert {("per worker", "decode only"), ("per worker", "train batches"),
            ("loader vs model", "model training step")} <= tables  # fmt: skip
    assert "Per worker process" in stdout


def test_inference(tmp_path: Path):
    stdout, result = run_benchmark(
        "inference", tmp_path / "r.json", "--size", "64", "--images", "4", "--repeats", "1",
        "--encoder", "resnet18",
    )  # fmt: skip
    paths = [row["path"] for row in result["rows"]]
    assert paths == ["bare forward (torch)", "predict.py resize", "predict.py whole",
                     "predict.py slide", "bare forward (onnx)", "predict.py onnx resize",
                     "predict.py onnx whole", "predict.py onnx slide"]  # fmt: skip
    assert all(row["own_backend_ratio"] > 0 for row in result["rows"])
    assert "| predict.py resize |" in stdout


def test_serve(tmp_path: Path):
    """A real `seglab serve` (a checkpoint and its ONNX export) under 1 and 2 concurrent
    clients, against the bare forward of each backend."""
    stdout, result = run_benchmark(
        "serve", tmp_path / "r.json", "--seconds", "1", "--clients", "2", "--encoder", "resnet18",
        "--modes", "slide",
    )  # fmt: skip
    rows = {row["path"]: row for row in result["rows"]}
    assert list(rows) == ["bare forward (torch)", "serve, 1 client", "serve slide, 2 clients",
                          "bare forward (onnx)", "serve onnx slide, 2 clients"]  # fmt: skip
    for served in ("serve slide, 2 clients", "serve onnx slide, 2 clients"):
        assert rows[served]["p50_ms"] > 0 and rows[served]["p99_ms"] > 0
        assert rows[served]["own_backend_ratio"] > 0
    assert rows["serve, 1 client"]["server_peak_rss_mib"] > 100
    assert "| serve onnx slide, 2 clients |" in stdout


def test_dataset_scan(tmp_path: Path):
    stdout, result = run_benchmark("dataset_scan", tmp_path / "r.json")
    assert [row["path"] for row in result["rows"]] == ["header only", "seglab", "full decode"]
    assert result["rows"][0]["ratio"] == 1.0 and "| demo 64 px |" in stdout


def test_equal_budget(tiny_export: Path, tmp_path: Path):
    """Both arms train for seconds and are scored the same way on the test split."""
    output = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "equal_budget.py"), "--data", str(tiny_export),
         "--minutes", "0.1", "--train-subset", "train", "--test-subset", "test", "--crop", "64",
         "64", "--out", str(tmp_path / "runs"), "--output", str(output), "--seed", "1",
         "data.image_size=[64,64]", "model.encoder_name=resnet18", "data.num_workers=0"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    for arm in ("seglab", "plain"):
        assert 0.0 <= result[arm]["mIoU"] <= 1.0 and result[arm]["images_per_s"] > 0
    # train.py's own test metrics are computed the benchmark's way: at native resolution.
    seglab = result["seglab"]
    assert abs(seglab["mIoU"] - seglab["train_py_test_mIoU"]) < 1e-4
    assert "ratio seglab / plain" in done.stdout
    # --seed repeats a pair with another seed: train.py's and the loop's.
    assert result["seed"] == 1 and seglab["overrides"][0] == "seed=1"


def test_equal_budget_one_arm_writes_its_json(tiny_export: Path, tmp_path: Path):
    """An exploration run of one arm keeps its figures in --output, with no other arm's keys."""
    output = tmp_path / "plain.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "equal_budget.py"), "--data", str(tiny_export),
         "--minutes", "0.02", "--train-subset", "train", "--test-subset", "test", "--crop", "64",
         "64", "--plain-only", "--output", str(output)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["dataset"] == tiny_export.name and result["minutes"] == 0.02
    assert 0.0 <= result["plain"]["mIoU"] <= 1.0 and result["plain"]["crop"] == [64, 64]
    assert "seglab" not in result and "ratio" not in result


def test_ranking(trained_run: dict, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ranking.py"), "--ckpt",
         trained_run["metrics"]["best_ckpt"], "--data", str(trained_run["export"]),
         "--subset", "val", "--output", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["frames"] == 3
    assert set(result["spearman"]) <= {"margin", "entropy", "disagreement"}  # NaN ones left out
    assert all(-1 <= rho <= 1 for rho in result["spearman"].values())
    assert "| score | Spearman vs mIoU |" in done.stdout


def test_report_overhead(tmp_path: Path):
    output = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report_overhead.py"), "--quick",
         "--output", str(output)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert [row["path"] for row in result["rows"]] == ["no report", "report"]
    assert all(row["median_s"] > 0 for row in result["rows"]) and result["redraw_ms"] > 0
    assert "| report |" in done.stdout and "write_run_report alone" in done.stdout
    # The profiled run found the report's hooks, and they cost under the 5%.
    assert result["callback_s"] > 0 and 0 < result["profiled_share"] < 0.05


def test_bit_depth(tmp_path: Path):
    """A 12-bit export and its 8-bit copy train one epoch each and are scored alike; the 8-bit
    arm is an export of the 8-bit images with the 16-bit export's ids and splits."""
    from tests.test_depth import eight_bit_copy, write_export

    data16 = write_export(tmp_path / "d16", ".tif")
    data8 = write_export(tmp_path / "d8", ".png", eight_bit_copy)
    (data8 / "JPEGImages" / "extra.png").write_bytes(b"")  # not in data16: never read
    output = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bit_depth.py"), "--data16", str(data16),
         "--data8", str(data8), "--epochs", "1", "--arm", "auto", "--arm", "8bit",
         "--out", str(tmp_path / "runs"), "--output", str(output),
         "data.image_size=[64,64]", "data.num_workers=0"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert [r["arm"] for r in result["rows"]] == ["16-bit, data.intensity=auto", "8bit"]
    for row in result["rows"]:
        assert 0.0 <= row["test_mIoU"] <= 1.0 and row["images_per_s"] > 0
        assert row["epochs"] == 1 and set(row["test_iou"]) == {"background", "nucleus"}
    copies = sorted(p.name for p in (tmp_path / "runs").glob("*/export8/JPEGImages/*"))
    assert copies == sorted(f"{p.stem}.png" for p in (data16 / "JPEGImages").iterdir())
    assert "| 8bit |" in done.stdout


def test_huge_slide(tmp_path: Path):
    """Both paths run as real predict.py processes; the huge one is streamed (its own
    stream_pixels between the two sizes) and its peak memory is measured per process."""
    stdout, result = run_benchmark("huge_slide", tmp_path / "r.json")
    small, huge = result["rows"]
    assert small["path"] == "2 images of 256x256" and huge["path"] == "1 image of 768x768"
    assert small["ratio"] == 1.0 and huge["mpx_per_s"] > 0 and huge["megapixels"] == 0.59
    assert 100 < huge["peak_rss_mib"] < 4096 and small["peak_rss_mib"] > 100
    assert "| 1 image of 768x768 |" in stdout and "peak RSS" in stdout
