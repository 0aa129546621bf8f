"""Colour masks <-> class-index masks, exact and vectorised."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from seglab.data.cvat import DatasetError


def index_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 while class ids and the ignore value 255 fit, uint16 beyond."""
    return np.uint8 if num_classes < 255 else np.uint16


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8 RGB array into one int32 per pixel, for exact lookup."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class ColorToIndex:
    """Exact colour -> class index lookup; an unknown colour is an error, never background."""

    def __init__(self, colors: Sequence[tuple[int, int, int]]):
        keys = pack_rgb(np.asarray(colors, dtype=np.uint8).reshape(-1, 3))
        order = np.argsort(keys)
        self._keys = keys[order]
        self._values = order.astype(index_dtype(len(colors)))

    def __call__(self, rgb: np.ndarray, source: str | Path = "<array>") -> np.ndarray:
        packed = pack_rgb(rgb)
        pos = np.searchsorted(self._keys, packed).clip(max=len(self._keys) - 1)
        known = self._keys[pos] == packed
        if not known.all():
            colors, counts = np.unique(packed[~known], return_counts=True)
            listed = ", ".join(
                f"{_unpack(c)} ({n} px)"
                for c, n in sorted(zip(colors, counts, strict=False), key=lambda t: -t[1])[:10]
            )
            raise DatasetError(
                f"{source}: {len(colors)} colour(s) not in labelmap.txt: {listed}. "
                "Add the label to labelmap.txt, or fix the mask"
            )
        return self._values[pos]


def _unpack(key: int) -> tuple[int, int, int]:
    key = int(key)
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def read_color_mask(path: Path) -> np.ndarray:
    """Read a colour mask PNG as (H, W, 3) RGB uint8; palette PNGs come out as their colours."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise DatasetError(f"{path}: cannot read mask (missing, corrupt or not an image)")
    if data.dtype != np.uint8:
        raise DatasetError(f"{path}: mask has {data.dtype} pixels; expected 8-bit colour PNG")
    if data.ndim == 2:
        raise DatasetError(
            f"{path}: mask is single-channel; CVAT 'Segmentation Mask 1.1' masks are RGB "
            "colour PNGs"
        )
    if data.shape[2] == 4:
        alpha = data[..., 3]
        if (alpha != 255).any():
            raise DatasetError(
                f"{path}: mask has {int((alpha != 255).sum())} transparent pixel(s); "
                "colour masks must be opaque"
            )
    return cv2.cvtColor(data[..., :3], cv2.COLOR_BGR2RGB)


def colorize(index_mask: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Class-index mask -> (H, W, 3) RGB colour mask with the labelmap colours."""
    palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return palette[index_mask]
