"""What the run report costs: the demo trained through train.py with and without it.

`python benchmarks/report_overhead.py [--repeats 2] [--override trainer.max_epochs=4]`

Arms, interleaved (A, B, A, B ...) so drift on a shared machine hits both alike:
- `no report`: `report=false ~callbacks.training_history ~callbacks.validation_images`;
- `report`: the defaults: history.json, val_images.csv, gallery/, run.json and report.html.

Each run is a whole `python train.py` process, as a user times it. Also timed alone: redrawing
report.html from the last run directory (`write_run_report`, median of 5).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seglab.report import write_run_report

from harness import save

ROOT = Path(__file__).resolve().parents[1]
WITHOUT = ["report=false", "~callbacks.training_history", "~callbacks.validation_images"]


def train_seconds(run_dir: Path, overrides: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "train.py", f"run_dir={run_dir}", "trainer.accelerator=cpu", *overrides],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 training steps")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm")
    parser.add_argument("--override", nargs="*", default=[], help="more train.py overrides")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()

    if args.quick:
        args.repeats = 1
        args.override += ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "test=false"]
    arms = {"no report": WITHOUT, "report": []}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, extra in arms.items():
                run_dir = Path(tmp) / f"{name.replace(' ', '_')}_{repeat}"
                seconds[name].append(train_seconds(run_dir, [*extra, *args.override]))
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
        redraws = []
        for _ in range(5):
            started = time.perf_counter()
            write_run_report(run_dir)
            redraws.append(time.perf_counter() - started)
        report_kib = (run_dir / "report.html").stat().st_size / 1024

    base = statistics.median(seconds["no report"])
    rows = [
        {"path": name, "median_s": round(statistics.median(v), 2), "min_s": round(min(v), 2),
         "max_s": round(max(v), 2), "ratio": round(statistics.median(v) / base, 3)}
        for name, v in seconds.items()
    ]  # fmt: skip
    print("\n| arm | wall s (median) | min – max | × no report |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['median_s']:.1f} | {r['min_s']:.1f} – {r['max_s']:.1f} | "
              f"{r['ratio']:.3f} |")  # fmt: skip
    redraw = statistics.median(redraws)
    print(f"\nwrite_run_report alone: {1000 * redraw:.0f} ms (median of 5); "
          f"report.html {report_kib:.0f} KiB")  # fmt: skip
    settings = {"repeats": args.repeats, "overrides": args.override,
                "redraw_ms": round(1000 * redraw, 1), "report_kib": round(report_kib)}  # fmt: skip
    save("report_overhead", args.output, settings, rows)


if __name__ == "__main__":
    main()
