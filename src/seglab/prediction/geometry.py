"""Sizes, padding and tiles for the Predictor's modes: smp encoders downsample 5 times, so every
network input is padded to a multiple of 32 and the logits cropped back; `slide` covers an image
with overlapping tiles whose logits are blended with weights that fall off towards the border.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seglab.preprocessing import resize_image

SIZE_MULTIPLE = 32


def round_to_multiple(value: float) -> int:
    """The nearest multiple of 32, at least 32 (a TTA-scaled training size)."""
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def round_up(value: int) -> int:
    return -(-value // SIZE_MULTIPLE) * SIZE_MULTIPLE


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad bottom and right (zero is the mean colour after normalisation)."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) logits -> (N, C, *size), bilinear; the same tensor when already that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def scale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """The image resized by a TTA factor (at least 1 pixel a side)."""
    if scale == 1.0:
        return image
    return resize_image(image, [max(1, round(v * scale)) for v in image.shape[:2]])


def stride(length: int, overlap: float) -> int:
    return max(1, round(length * (1.0 - overlap)))


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile offsets covering [0, length): evenly strided, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride(tile, overlap)))
    return [*starts, length - tile]


@functools.lru_cache(maxsize=8)
def tile_window(tile_h: int, tile_w: int, overlap: float, device: torch.device) -> torch.Tensor:
    """Per-pixel tile weight: 1 inside, falling linearly to 1/ramp over the overlap at the
    border, so seams between tiles blend instead of jumping. Made once per size and shared
    (3 ms a call at 512 px, once per image at batch 1): read it, never write into it."""

    def ramp(length: int) -> torch.Tensor:
        width = max(1, length - stride(length, overlap))
        i = torch.arange(length, dtype=torch.float32, device=device)
        return torch.minimum((i + 1) / width, (length - i) / width).clamp(max=1.0)

    return ramp(tile_h)[:, None] * ramp(tile_w)[None, :]
