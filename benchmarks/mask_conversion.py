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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seglab.data.labelmap import index_colors
from seglab.data.masks import MaskDecoder, read_mask_array

from harness import interleave, markdown, save, summarize


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


def images_per_second(fn: Callable[[Path], object], paths: list[Path]) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter()
        for path in paths:
            fn(path)
        return len(paths) / (time.perf_counter() - start)

    return measure


def measure(paths: list[Path], num_classes: int, repeats: int) -> dict[str, list[float]]:
    colors = index_colors(num_classes)
    decoder = MaskDecoder(colors, list(range(num_classes)), ignore_index=255)
    decoded = {p: read_mask_array(p) for p in paths}
    return interleave(
        {
            "decode only": images_per_second(read_mask_array, paths),
            "seglab": images_per_second(decoder, paths),
            "lookup only": images_per_second(lambda p: decoder._from_colors(decoded[p]), paths),
        },
        repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repetitions")
    parser.add_argument("--size", type=int, default=1024, help="mask side in pixels")
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()
    count, repeats = (4, 3) if args.quick else (16, 7)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for num_classes in args.classes:
            paths = write_masks(Path(tmp), count, args.size, num_classes)
            runs = measure(paths, num_classes, repeats)
            rows += summarize(runs, "decode only", classes=num_classes)

    print(f"\nMask conversion, {args.size}x{args.size} colour PNGs, {count} images x {repeats} "
          "interleaved repetitions, one process\n")  # fmt: skip
    print(markdown(rows, "decode only", extra=["classes"]))
    settings = {"size": args.size, "images": count, "repeats": repeats}
    save("mask_conversion", args.output, settings, rows)


if __name__ == "__main__":
    main()
