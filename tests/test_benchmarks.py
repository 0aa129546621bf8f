"""Each benchmark script runs its --quick path and writes well-formed results (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def run_benchmark(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_mask_conversion(tmp_path: Path):
    output = tmp_path / "mask_conversion.json"
    stdout = run_benchmark("mask_conversion", "--size", "64", "--output", str(output))
    result = json.loads(output.read_text())
    assert {row["path"] for row in result["rows"]} == {"decode only", "seglab", "lookup only"}
    assert all(row["median_img_s"] > 0 for row in result["rows"])
    assert result["machine"]["cores"] >= 1
    assert "| 32 | seglab |" in stdout
