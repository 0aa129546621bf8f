"""Instance masks for CVAT exports: every connected region of a class is one instance.

CVAT imports "Segmentation mask 1.1" through Datumaro's VOC reader, which knows the 256 colours
of the VOC palette only: instance 0 is "none" and ids 1..255 are instances. An instance mask
with a 256th instance holds a colour outside that palette (e.g. (0, 0, 32)), and Datumaro
refuses the whole item ("Undeclared color"). A noisy prediction easily has more regions than
that, so:

1. regions smaller than `min_area` pixels are dropped from the item (their pixels become
   background in the class mask too, so class and instance masks agree), when the label set has
   a background class;
2. if more than 255 regions remain, the largest keep an instance each, and the remaining
   (smallest) regions of each class are merged into one instance per class. Every class pixel
   is kept; a merged instance is one CVAT mask shape made of several parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_INSTANCES = 255  # VOC palette entries 1..255; 0 = no instance


@dataclass
class InstanceReport:
    """What an item's instance mask had to change, for the user to hear."""

    dropped: int = 0  # regions under min_area, removed
    merged: int = 0  # regions that share a per-class instance (more than 255 regions)


def instance_mask(
    class_mask: np.ndarray, background: int | None, min_area: int = 0
) -> tuple[np.ndarray, np.ndarray, InstanceReport]:
    """(class mask, instance ids 0..255, report) for one item; the class mask is a copy with
    the dropped regions set to `background`."""
    class_mask = class_mask.copy()
    report = InstanceReport()
    regions: list[tuple[int, int, np.ndarray]] = []  # (area, class, pixel indices)
    for value in np.unique(class_mask):
        if value == background:
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (class_mask == value).astype(np.uint8), None, 8
        )
        order = np.argsort(labels, axis=None, kind="stable")
        bounds = np.cumsum(stats[:, cv2.CC_STAT_AREA])
        for region in range(1, count):
            pixels = order[bounds[region - 1] : bounds[region]]
            area = int(stats[region, cv2.CC_STAT_AREA])
            if background is not None and area < min_area:
                class_mask.flat[pixels] = background
                report.dropped += 1
                continue
            regions.append((area, int(value), pixels))

    instances = np.zeros(class_mask.shape, np.uint8)
    regions.sort(key=lambda r: -r[0])  # largest first; stable for equal areas
    if len(regions) > MAX_INSTANCES:
        classes = sorted({value for _, value, _ in regions})
        if len(classes) > MAX_INSTANCES:
            raise ValueError(
                f"{len(classes)} classes in one image: a CVAT mask export holds at most "
                f"{MAX_INSTANCES} instances per image"
            )
        own = MAX_INSTANCES - len(classes)  # the rest: one merged instance per class
        merged_id = {value: own + 1 + i for i, value in enumerate(classes)}
        for index, (_, value, pixels) in enumerate(regions):
            instances.flat[pixels] = index + 1 if index < own else merged_id[value]
        report.merged = len(regions) - own
    else:
        for index, (_, _, pixels) in enumerate(regions):
            instances.flat[pixels] = index + 1
    return class_mask, instances, report
