"""What every benchmark shares: the machine it ran on, interleaved repetitions, the table, the
JSON next to the script. Rates are images per second; a row's ratio is against the baseline
path measured in the same run."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def interleave(paths: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run A, B, C, A, B, C ...: drift on a shared machine then hits every path alike.

    Each callable measures itself and returns images/s; one unrecorded warm-up call each first
    (page cache, allocator, lazy imports, cuDNN autotuning).
    """
    for measure in paths.values():
        measure()
    runs: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, measure in paths.items():
            runs[name].append(measure())
    return runs


def summarize(runs: dict[str, list[float]], baseline: str, **columns: Any) -> list[dict[str, Any]]:
    """One row per path: median, min and max images/s and the ratio of medians to `baseline`."""
    floor = statistics.median(runs[baseline])
    return [
        {
            **columns,
            "path": name,
            "median_img_s": round(statistics.median(values), 3),
            "min_img_s": round(min(values), 3),
            "max_img_s": round(max(values), 3),
            "ratio": round(statistics.median(values) / floor, 3),
        }
        for name, values in runs.items()
    ]


def markdown(rows: Sequence[dict[str, Any]], baseline: str, extra: Sequence[str] = ()) -> str:
    """A markdown table: the `extra` columns, then path, median, min – max, × baseline."""
    head = [*extra, "path", "images/s (median)", "min – max", f"× {baseline}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r[key]) for key in extra]
        cells += [
            r["path"],
            f"{r['median_img_s']:.2f}",
            f"{r['min_img_s']:.2f} – {r['max_img_s']:.2f}",
            f"{r['ratio']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(name: str, output: Path | None, settings: dict[str, Any], rows: list[dict]) -> Path:
    output = output or RESULTS / f"{name}.json"
    result = {"benchmark": name, **settings, "machine": machine_info(), "rows": rows}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['machine']}\nwrote {output}")
    return output
