"""Read every mask once, as training will, before training starts.

A bad mask found in epoch 7 by a worker process costs hours; found here it costs seconds, and
all problems are listed at once. The same pass counts pixels per class and split, which
`seglab inspect` prints and class weighting can use.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from seglab.data.cvat import Sample, SegmentationExport
from seglab.data.errors import DatasetError
from seglab.data.masks import MaskDecoder, describe_unknown


@dataclass
class ScanReport:
    class_names: list[str]
    images: dict[str, int] = field(default_factory=dict)  # split -> images
    pixels: dict[str, np.ndarray] = field(default_factory=dict)  # split -> pixels per class
    unknown: dict[tuple[int, ...], list[int]] = field(default_factory=dict)  # value -> [px, files]
    problems: list[str] = field(default_factory=list)  # what training would reject

    def missing_classes(self, split: str) -> list[str]:
        return [n for n, px in zip(self.class_names, self.pixels[split], strict=True) if px == 0]


def scan_export(export: SegmentationExport, decoder: MaskDecoder) -> ScanReport:
    """Decode every mask, check sizes against images; collect problems instead of stopping."""
    report = ScanReport(class_names=export.class_names)
    num_classes = len(export.classes)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(
            pool.map(
                lambda s: _scan_one(s, decoder, num_classes, export.background_index),
                export.samples,
            )
        )
    unknown_files: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for sample, (counts, unknown, problem) in zip(export.samples, results, strict=True):
        report.images[sample.split] = report.images.get(sample.split, 0) + 1
        totals = report.pixels.setdefault(sample.split, np.zeros(num_classes, np.int64))
        if counts is not None:
            totals += counts
        if problem:
            report.problems.append(problem)
        for value, n in unknown.items():
            entry = report.unknown.setdefault(value, [0, 0])
            entry[0] += n
            entry[1] += 1
            unknown_files[value].append(str(sample.mask))
    if report.unknown and decoder.unknown_colors == "error":
        for value, files in unknown_files.items():
            px = report.unknown[value][0]
            shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            report.problems.append(
                f"{describe_unknown({value: px})} in {len(files)} mask(s): {shown}"
            )
    return report


EXIF_ORIENTATION = 0x0112
ROTATED_90 = (5, 6, 7, 8)  # orientations that swap width and height


def _scan_one(
    sample: Sample, decoder: MaskDecoder, num_classes: int, background_index: int | None
) -> tuple[np.ndarray | None, dict[tuple[int, ...], int], str | None]:
    try:
        with Image.open(sample.image) as image:  # reads the header only
            width, height = image.size
            # OpenCV, like CVAT, shows the image turned by its EXIF orientation; so must the check.
            if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_90:
                width, height = height, width
    except (OSError, SyntaxError, ValueError) as err:
        return None, {}, f"{sample.image}: cannot read image ({err})"
    if sample.mask is None:
        counts = np.zeros(num_classes, np.int64)
        counts[background_index] = width * height
        return counts, {}, None
    try:
        decoded = decoder.decode(sample.mask)
    except DatasetError as err:
        return None, {}, str(err)
    mask_h, mask_w = decoded.mask.shape
    if (mask_h, mask_w) != (height, width):
        return (
            None,
            {},
            (
                f"{sample.mask}: mask is {mask_w}x{mask_h} but image {sample.image} is "
                f"{width}x{height} (WxH)"
            ),
        )
    counts = np.bincount(decoded.mask.ravel(), minlength=num_classes)[:num_classes]
    return counts.astype(np.int64), decoded.unknown, None


def raise_on_problems(report: ScanReport, limit: int = 20) -> None:
    if report.problems:
        shown = "\n  ".join(report.problems[:limit])
        more = (
            f"\n  ... and {len(report.problems) - limit} more"
            if len(report.problems) > limit
            else ""
        )
        raise DatasetError(
            f"{len(report.problems)} problem(s) in the dataset, nothing was trained:"
            f"\n  {shown}{more}"
        )
