"""What the dataset scan before training (and `seglab inspect`) costs, and what checking images
for truncation added to it.

The scan reads every mask in full and checks every image. Three ways of checking the images run
on the same dataset, interleaved in every repetition, each as the whole scan (`scan_export`):

- `header only`   the scan before truncation checks: Pillow's header and EXIF orientation
                  (the baseline; a truncated JPEG passed it);
- `seglab`        the scan as it is: JPEGs must end with their end marker (only a JPEG without
                  one is decoded), every other format is decoded in full;
- `full decode`   every image decoded in full by Pillow (the alternative not taken).

    python benchmarks/dataset_scan.py                       # the demo (`seglab demo`), 128 px
    python benchmarks/dataset_scan.py /path/to/export ...   # real exports (folders or zips)
    python benchmarks/dataset_scan.py --quick               # small demo, fewer repetitions

Rates are samples (image + mask) per second of the whole scan, with the scan's threads (one per
core, at most 8). Prints a markdown table and writes `benchmarks/results/dataset_scan.json`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

import seglab.data.scan as scan
from seglab.data.dataset import build_decoder
from seglab.data.images import EXIF_ORIENTATION, ROTATED_90, check_image
from seglab.data.layouts import read_export
from seglab.demo import write_demo_export

from harness import interleave, markdown, save, summarize


def header_only(path: Path, limit: int) -> tuple[int, int]:
    """The image check of the scan before truncated images were detected."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_90:
            width, height = height, width
    return width, height


def full_decode(path: Path, limit: int) -> tuple[int, int]:
    """Every image decoded in full (one decode: the EXIF lookup reuses it)."""
    with Image.open(path) as image:
        image.load()
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_90:
            width, height = height, width
    return width, height


def scan_rate(root: Path, check: Callable[[Path, int], tuple[int, int]]) -> Callable[[], float]:
    """Samples per second of the whole scan with `check` as its image check."""
    export = read_export(root)
    decoder = build_decoder(export)

    def measure() -> float:
        scan.check_image = check  # the scan's one image check, swapped for this path
        try:
            start = time.perf_counter()
            report = scan.scan_export(export, decoder)
            elapsed = time.perf_counter() - start
        finally:
            scan.check_image = check_image
        if report.problems:
            raise SystemExit(f"{root}: the scan found problems: {report.problems[:3]}")
        return len(export.samples) / elapsed

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="exports (default: the demo)")
    parser.add_argument("--quick", action="store_true", help="small demo, fewer repetitions")
    parser.add_argument("--size", type=int, default=128, help="demo image side (default 128)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (default 5; 2 quick)")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)

    size = min(args.size, 64) if args.quick else args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.paths or [write_demo_export(Path(tmp) / "demo", size=size)]
        for root in paths:
            runs = interleave(
                {
                    "header only": scan_rate(root, header_only),
                    "seglab": scan_rate(root, check_image),
                    "full decode": scan_rate(root, full_decode),
                },
                repeats,
            )
            name = root.name if args.paths else f"demo {size} px"
            samples = len(read_export(root).samples)
            rows += summarize(runs, "header only", dataset=name, samples=samples)

    print(f"\nThe dataset scan (scan_export), {repeats} interleaved repetitions, samples/s\n")
    print(markdown(rows, "header only", extra=["dataset", "samples"]))
    save(
        "dataset_scan", args.output, {"repeats": repeats, "datasets": [str(p) for p in paths]}, rows
    )


if __name__ == "__main__":
    main()
