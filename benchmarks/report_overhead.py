"""What the run report costs: the demo trained through train.py with and without it.

`python benchmarks/report_overhead.py [--repeats 2] [--override trainer.max_epochs=4]`

Arms, interleaved (A, B, A, B ...) so drift on a shared machine hits both alike:
- `no report`: `report=false ~callbacks.training_history ~callbacks.validation_images`;
- `report`: the defaults: history.json, val_images.csv, gallery/, run.json and report.html.

Each run is a whole `python train.py` process, as a user times it. Also timed alone: redrawing
report.html from the last run directory (`write_run_report`, median of 5). Wall times of whole
runs move with the load of a shared machine, so one more `report` run is profiled (Lightning's
SimpleProfiler): the time spent in the report's callbacks as a share of the run's own time,
a figure the machine's other load barely changes.
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
REPORT_CALLBACKS = ("[Callback]TrainingHistory", "[Callback]ValidationImages")


def profiler_overrides(run_dir: Path) -> list[str]:
    """SimpleProfiler writing one table per stage (fit, validate, test) into the run directory."""
    return [
        "+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
        f"+trainer.profiler.dirpath={run_dir}",
        "+trainer.profiler.filename=profile",
    ]


def callback_seconds(run_dir: Path) -> tuple[float, float]:
    """(seconds in the report's callback hooks, seconds profiled in all) over every stage."""
    in_callbacks = profiled = 0.0
    for table in run_dir.glob("*profile*.txt"):
        for line in table.read_text().splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) < 6 or not cells[4].replace(".", "", 1).isdigit():
                continue  # the header, separators and the extra lines
            if cells[1] == "Total":
                profiled += float(cells[4])
            elif cells[1].startswith(REPORT_CALLBACKS):
                in_callbacks += float(cells[4])
    return in_callbacks, profiled


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
        # Unmeasured: the first process pays for the demo's files, the scan's cache and cold
        # imports (measured: 77 s against 36 s for the same --quick run right after it).
        # --quick checks the plumbing, not the times: no warm-up there.
        warm_up = ["trainer.max_epochs=1", "++trainer.limit_train_batches=1", "test=false"]
        if not args.quick:
            train_seconds(Path(tmp) / "warm_up", [*args.override, *warm_up])
        for repeat in range(args.repeats):
            for name, extra in arms.items():
                run_dir = Path(tmp) / f"{name.replace(' ', '_')}_{repeat}"
                seconds[name].append(train_seconds(run_dir, [*extra, *args.override]))
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
        profiled_dir = Path(tmp) / "profiled"
        train_seconds(profiled_dir, [*args.override, *profiler_overrides(profiled_dir)])
        in_callbacks, profiled = callback_seconds(profiled_dir)
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
    share = (in_callbacks + redraw) / profiled
    print(f"profiled report run: {in_callbacks:.2f} s in the report's callbacks + "
          f"{redraw:.2f} s writing report.html = {100 * share:.2f}% of {profiled:.0f} s "
          "profiled (fit, validate, test)")  # fmt: skip
    settings = {"repeats": args.repeats, "overrides": args.override,
                "redraw_ms": round(1000 * redraw, 1), "report_kib": round(report_kib),
                "callback_s": round(in_callbacks, 3), "profiled_s": round(profiled, 1),
                "profiled_share": round(share, 4)}  # fmt: skip
    save("report_overhead", args.output, settings, rows)


if __name__ == "__main__":
    main()
