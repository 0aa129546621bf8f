"""Read every image and mask once, as training will, before training starts.

A bad file found in epoch 7 by a worker process costs hours; found here it costs seconds, and
all problems are listed at once. `seglab inspect` and the datamodule run this same scan and
refuse the same datasets: whatever training would reject is a problem here (an unreadable,
truncated or oversized image, a bad mask, a train or val split without images). The same pass
counts pixels per class and split, which `seglab inspect` prints and class weighting uses, and
the pixels near an outline, from which `model.decoder_output_stride: auto` decides how finely
the network must draw them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from seglab.data.channels import file_channels
from seglab.data.errors import DatasetError
from seglab.data.images import check_image, max_image_pixels, pillow_limit_off, too_large
from seglab.data.layouts import Sample, SegmentationExport
from seglab.data.masks import MaskDecoder, describe_unknown

REQUIRED_SPLITS = ("train", "val")  # training fits on train and picks checkpoints on val
OUTLINE_RADIUS = 2  # pixels: "near an outline" = another class within this (chessboard) distance


@dataclass
class ScanReport:
    class_names: list[str]
    images: dict[str, int] = field(default_factory=dict)  # split -> images
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # split -> [(h, w)]
    # split -> [(image, channels)]: `model.in_channels: auto` (`seglab.data.channels`)
    channels: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    pixels: dict[str, np.ndarray] = field(default_factory=dict)  # split -> pixels per class
    # split -> labelled pixels within OUTLINE_RADIUS of another class (`outline_share`)
    outline: dict[str, int] = field(default_factory=dict)
    # split -> one bool array per image, in the split's order: the classes it holds
    presence: dict[str, list[np.ndarray]] = field(default_factory=dict)
    unknown: dict[tuple[int, ...], list[int]] = field(default_factory=dict)  # value -> [px, files]
    problems: list[str] = field(default_factory=list)  # what training would reject

    def missing_classes(self, split: str) -> list[str]:
        return [n for n, px in zip(self.class_names, self.pixels[split], strict=True) if px == 0]

    def outline_share(self, split: str) -> float | None:
        """The share of the split's labelled pixels within OUTLINE_RADIUS pixels of another
        class, at the masks' own resolution: high for small objects (cells, defects), whose
        outlines are much of their area; None without labelled pixels."""
        labelled = int(self.pixels.get(split, np.zeros(1)).sum())
        return self.outline.get(split, 0) / labelled if labelled else None


def scan_export(export: SegmentationExport, decoder: MaskDecoder) -> ScanReport:
    """Check every image, decode every mask, compare sizes; collect problems instead of
    stopping at the first."""
    report = ScanReport(class_names=export.class_names)
    report.problems.extend(split_problems(export))
    num_classes = len(export.classes)
    limit = max_image_pixels()
    workers = min(8, os.cpu_count() or 1)
    with pillow_limit_off(), ThreadPoolExecutor(workers) as pool:
        results = list(
            pool.map(
                lambda s: _scan_one(s, decoder, num_classes, export.background_index, limit),
                export.samples,
            )
        )
    unknown_files: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for sample, (counts, outline, unknown, problem, size, channels) in zip(
        export.samples, results, strict=True
    ):
        report.images[sample.split] = report.images.get(sample.split, 0) + 1
        if size is not None:
            report.sizes.setdefault(sample.split, []).append(size)
            report.channels.setdefault(sample.split, []).append((str(sample.image), channels))
        totals = report.pixels.setdefault(sample.split, np.zeros(num_classes, np.int64))
        if counts is not None:
            totals += counts
            report.presence.setdefault(sample.split, []).append(counts > 0)
            report.outline[sample.split] = report.outline.get(sample.split, 0) + outline
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
            hint = decoder.fix_hint({value: px})
            report.problems.append(
                f"{describe_unknown({value: px})} in {len(files)} mask(s): {shown}. {hint}"
            )
    return report


def split_problems(export: SegmentationExport) -> list[str]:
    """A split training needs that has no image (an empty subset file, say)."""
    return [
        f"{export.root}: no {split!r} images; the dataset has {export.splits}. Name subsets "
        "train/val(idation)/test, or map yours: data.subset_map={name: split}"
        for split in REQUIRED_SPLITS
        if not export.split(split)
    ]


def _scan_one(
    sample: Sample,
    decoder: MaskDecoder,
    num_classes: int,
    background_index: int | None,
    limit: int,
) -> tuple[
    np.ndarray | None, int, dict[tuple[int, ...], int], str | None, tuple[int, int] | None, int
]:
    """(pixels per class, pixels near an outline, unknown mask values, the problem, the image's
    (height, width), its channel count)."""
    try:
        width, height = check_image(sample.image, limit)
        channels = file_channels(sample.image, sample.image)
    except DatasetError as err:
        return None, 0, {}, str(err), None, 0
    size = (height, width)
    result = _scan_mask(sample, decoder, num_classes, background_index, limit, size)
    return (*result, size, channels)


def _scan_mask(
    sample: Sample,
    decoder: MaskDecoder,
    num_classes: int,
    background_index: int | None,
    limit: int,
    size: tuple[int, int],
) -> tuple[np.ndarray | None, int, dict[tuple[int, ...], int], str | None]:
    """(pixels per class, pixels near an outline, unknown mask values, the problem) of the
    sample's mask."""
    height, width = size
    if sample.mask is None:
        counts = np.zeros(num_classes, np.int64)
        counts[background_index] = width * height
        return counts, 0, {}, None
    try:
        problem = _mask_too_large(sample, limit)
        if problem:
            return None, 0, {}, problem
        decoded = decoder.decode(sample.mask)
    except DatasetError as err:
        return None, 0, {}, str(err)
    mask_h, mask_w = decoded.mask.shape
    if (mask_h, mask_w) != (height, width):
        problem = (
            f"{sample.mask}: mask is {mask_w}x{mask_h} but image {sample.image} is "
            f"{width}x{height} (WxH)"
        )
        return None, 0, {}, problem
    counts = np.bincount(decoded.mask.ravel(), minlength=num_classes)[:num_classes]
    outline = outline_pixels(decoded.mask, num_classes)
    return counts.astype(np.int64), outline, decoded.unknown, None


def outline_pixels(mask: np.ndarray, num_classes: int, rows: int = 1024) -> int:
    """Labelled pixels (class ids below `num_classes`) with another class within OUTLINE_RADIUS
    pixels: where the largest and the smallest class of the neighbourhood differ, ignored
    pixels (any other value) taking part in neither. Counted `rows` at a time, so a
    gigapixel mask needs a few strips' worth of memory, not a few copies of itself."""
    window = np.ones((2 * OUTLINE_RADIUS + 1,) * 2, np.uint8)
    total = 0
    for top in range(0, mask.shape[0], rows):
        start = max(0, top - OUTLINE_RADIUS)  # the strip plus the rows its outlines can see
        strip = mask[start : top + rows + OUTLINE_RADIUS]
        labelled = strip < num_classes
        largest = cv2.dilate(np.where(labelled, strip, 0).astype(mask.dtype), window)
        smallest = cv2.erode(np.where(labelled, strip, num_classes - 1).astype(mask.dtype), window)
        counted = slice(top - start, top - start + rows)
        total += int(np.count_nonzero(((largest != smallest) & labelled)[counted]))
    return total


def _mask_too_large(sample: Sample, limit: int) -> str | None:
    """Read the mask's header before decoding it: Pillow's own limit is off during the scan."""
    try:
        with Image.open(sample.mask) as mask:
            width, height = mask.size
    except (OSError, SyntaxError, ValueError):
        return None  # the decoder reports unreadable masks in its own words
    return too_large(sample.mask, "mask", width, height, limit)


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
