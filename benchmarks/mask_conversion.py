"""Colour mask -> class-index conversion throughput, against decoding the same PNG alone.

The question it answers: does seglab's exact colour lookup cost anything next to the PNG decode
that any loader pays anyway? Three paths run on the same files, interleaved in every repetition:

- `decode only`   seglab's reader decodes the PNG to an RGB array (the floor);
- `seglab`        `MaskDecoder(path)`: that decode, the lookup and the unknown-colour check,
                  as training runs it;
- `lookup only`   the lookup alone on the already decoded array.

    python benchmarks/mask_conversion.py            # 1024x1024, 4 and 32 classes
    python benchmarks/mask_conversion.py --quick    # fewer images and repetitions, < 1 min

Prints a markdown table and writes `benchmarks/results/mask_conversion.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seglab.data.cvat import index_colors
from seglab.data.masks import MaskDecoder, read_mask_array

from machine import machine_info

RESULTS = Path(__file__).parent / "results"


def write_masks(folder: Path, count: int, size: int, num_classes: int) -> list[Path]:
    """CVAT-like colour masks: a background with filled polygons and ellipses of every class."""
    rng = np.random.default_rng(0)
    colors = np.asarray(index_colors(num_classes), np.uint8)
    paths = []
    for i in range(count):
        index = np.zeros((size, size), np.uint8)
        for _ in range(6 * num_classes):
            cls = int(rng.integers(1, num_classes))
            center = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(size // 40, size // 6, 2))
            cv2.ellipse(index, center, axes, float(rng.uniform(0, 180)), 0, 360, cls, -1)
        path = folder / f"mask_{num_classes}_{i}.png"
        Image.fromarray(colors[index]).save(path)
        paths.append(path)
    return paths


def images_per_second(fn: Callable[[Path], object], paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        fn(path)
    return len(paths) / (time.perf_counter() - start)


def measure(paths: list[Path], num_classes: int, repeats: int) -> dict[str, list[float]]:
    colors = index_colors(num_classes)
    decoder = MaskDecoder(colors, list(range(num_classes)), ignore_index=255)
    decoded = {p: read_mask_array(p) for p in paths}
    paths_fn: dict[str, Callable[[Path], object]] = {
        "decode only": read_mask_array,
        "seglab": decoder,
        "lookup only": lambda p: decoder._from_colors(decoded[p]),
    }
    for fn in paths_fn.values():  # warm-up: page cache, allocator, lazy imports
        fn(paths[0])
    runs: dict[str, list[float]] = {name: [] for name in paths_fn}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits every path alike
        for name, fn in paths_fn.items():
            runs[name].append(images_per_second(fn, paths))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repetitions")
    parser.add_argument("--size", type=int, default=1024, help="mask side in pixels")
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--output", type=Path, default=RESULTS / "mask_conversion.json")
    args = parser.parse_args()
    count, repeats = (4, 3) if args.quick else (16, 7)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for num_classes in args.classes:
            paths = write_masks(Path(tmp), count, args.size, num_classes)
            runs = measure(paths, num_classes, repeats)
            floor = statistics.median(runs["decode only"])
            for name, values in runs.items():
                median = statistics.median(values)
                rows.append(
                    {
                        "classes": num_classes,
                        "path": name,
                        "median_img_s": round(median, 2),
                        "min_img_s": round(min(values), 2),
                        "max_img_s": round(max(values), 2),
                        "megapixels_s": round(median * args.size**2 / 1e6, 1),
                        "vs_decode_only": round(median / floor, 3),
                    }
                )

    print(f"\nMask conversion, {args.size}x{args.size} colour PNGs, {count} images x {repeats} "
          "interleaved repetitions, one process\n")  # fmt: skip
    print("| classes | path | images/s (median) | min – max | Mpx/s | × decode only |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['classes']} | {r['path']} | {r['median_img_s']:.1f} | "
            f"{r['min_img_s']:.1f} – {r['max_img_s']:.1f} | {r['megapixels_s']} | "
            f"{r['vs_decode_only']:.2f} |"
        )
    result = {
        "benchmark": "mask_conversion",
        "size": args.size,
        "images": count,
        "repeats": repeats,
        "machine": machine_info(),
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['machine']}\nwrote {args.output}")


if __name__ == "__main__":
    main()
