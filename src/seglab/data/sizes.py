"""The sizes a run trains at, from the data and the machine: `data.image_size: auto` (the
evaluation scale) and `data.crop_size: auto` (the training crop cut from it). Each rule is
printed at the start of a run; an explicit size always wins."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from seglab.errors import ConfigError
from seglab.preprocessing import fit_size, max_fit_ratio

# `data.image_size: auto` caps the long side of the evaluation scale at this.
AUTO_MAX_SIDE = 1024


def auto_image_size(
    sizes: Sequence[Sequence[int]], max_side: int = AUTO_MAX_SIDE
) -> tuple[int, int]:
    """`data.image_size: auto`: the median (height, width) of the training images, scaled down
    so that the long side is at most `max_side`, each side rounded up to a multiple of 32 (at
    least 64). The median image and every smaller one then fit at their own pixels (padded,
    `data.upscale: false`; training takes crops of them, `data.crop_size`); only larger ones
    are shrunk. A cap of 512 shrank 520x696 micrographs by 0.74 and cost their small nuclei
    0.02 test mIoU; rounding to the nearest multiple (512x704) shrank them by 0.985, which
    jitters every outline against its label (benchmarks/README.md)."""
    if not sizes:
        return (512, 512)
    height, width = median_size(sizes)
    ratio = min(1.0, max_side / max(height, width))
    return tuple(max(64, math.ceil(v * ratio / 32 - 1e-9) * 32) for v in (height, width))  # type: ignore[return-value]


def median_size(sizes: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The median height and the median width of images of `sizes` (height, width)."""
    heights = sorted(int(s[0]) for s in sizes)
    widths = sorted(int(s[1]) for s in sizes)
    return heights[len(heights) // 2], widths[len(widths) // 2]


# `data.crop_size: auto` caps each side of the training crop at this.
AUTO_CROP_SIDE = 512
# ... and, with `data.crop_pixels: auto` on a machine without a GPU, its area at this (320x224).
CPU_CROP_PIXELS = 320 * 224


def auto_crop_size(
    image_size: Sequence[int], max_pixels: int | None = None, max_side: int = AUTO_CROP_SIDE
) -> tuple[int, int]:
    """`data.crop_size: auto`: `image_size` with each side capped at `max_side` and, when
    `max_pixels` is given, scaled down to about that area (aspect kept, each side rounded to a
    multiple of 32, at least 64). Crops are cut at the image's own scale: a smaller crop keeps
    every detail and trades context for more optimizer steps per minute, which is what a run
    on a CPU lacks (measured in benchmarks/README.md, equal_budget.py)."""
    crop = [min(max_side, int(v)) for v in image_size]
    if max_pixels is not None and crop[0] * crop[1] > max_pixels:
        ratio = (max_pixels / (crop[0] * crop[1])) ** 0.5
        crop = [max(64, round(v * ratio / 32) * 32) for v in crop]
    return crop[0], crop[1]


def resolve_crop_pixels(option: int | str | None, timed: bool) -> int | None:
    """`data.crop_pixels`, the largest area of an `auto` crop: a number, null for no cap, or
    `auto`: `CPU_CROP_PIXELS` for a run with a time budget (`budget=`, `trainer.max_time`) and
    no CUDA, where the step rate bounds what the run learns; no cap otherwise, so epochs on a
    GPU and runs without a budget train on the crops they always did."""
    if option == "auto":
        return CPU_CROP_PIXELS if timed and not torch.cuda.is_available() else None
    if option is not None and (isinstance(option, bool) or not isinstance(option, int)):
        raise ConfigError(f"data.crop_pixels={option!r}: give a number of pixels, auto or null")
    return option


def median_fit_scale(
    sizes: Sequence[Sequence[int]], image_size: Sequence[int], upscale: bool
) -> float:
    """The factor by which training scales the median training image to fit `image_size`
    (below 1 for images shrunk, 1 for images kept at their own pixels); 1 without sizes."""
    if not sizes:
        return 1.0
    height, width = median_size(sizes)
    fitted = fit_size((height, width), image_size, max_fit_ratio(upscale))
    return max(fitted[0] / height, fitted[1] / width)
