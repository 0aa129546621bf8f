"""Mask files -> class-index masks: exact, vectorised, and loud about anything unexpected.

Mask values refer to the labelmap's labels: a colour (RGB, opaque RGBA, or a palette PNG's
palette colour) or, in a single-channel PNG, the label's position in the labelmap (Datumaro's
reading of grayscale masks). A lookup table then maps each label to its training class index, or
to `ignore_index` for ignored labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data.errors import DatasetError

UNKNOWN_POLICIES = ("error", "ignore")


def index_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 while class ids and the ignore value 255 fit, uint16 beyond."""
    return np.uint8 if num_classes < 255 else np.uint16


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8 RGB array into one int32 per pixel, for exact lookup."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(key: int) -> tuple[int, int, int]:
    key = int(key)
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


@dataclass(frozen=True)
class Decoded:
    """A class-index mask and the pixels it could not map (set to ignore_index), by value."""

    mask: np.ndarray
    unknown: dict[tuple[int, ...], int]


class MaskDecoder:
    """Reads mask files of any supported kind into class-index masks."""

    def __init__(
        self,
        label_colors: Sequence[tuple[int, int, int]],
        label_targets: Sequence[int],
        ignore_index: int,
        unknown_colors: str = "error",
    ):
        """`label_targets[i]` is the class index (or ignore_index) of the labelmap's label i."""
        if unknown_colors not in UNKNOWN_POLICIES:
            raise DatasetError(f"data.unknown_colors={unknown_colors!r}: use error or ignore")
        num_classes = max((t for t in label_targets if t != ignore_index), default=0) + 1
        if 0 <= ignore_index < num_classes or ignore_index > np.iinfo(np.uint16).max:
            raise DatasetError(
                f"data.ignore_index={ignore_index} collides with the {num_classes} class ids; "
                f"set it to a value in [{num_classes}, 65535], e.g. data.ignore_index=65535"
            )
        self.dtype = np.uint8 if ignore_index <= 255 and num_classes <= 255 else np.uint16
        self.ignore_index = ignore_index
        self.unknown_colors = unknown_colors
        self.targets = np.asarray(label_targets, dtype=self.dtype)
        keys = pack_rgb(np.asarray(label_colors, dtype=np.uint8).reshape(-1, 3))
        order = np.argsort(keys)
        self._keys, self._key_targets = keys[order], self.targets[order]

    def __call__(self, path: Path) -> np.ndarray:
        """The class-index mask of `path`; unknown values raise unless unknown_colors=ignore."""
        decoded = self.decode(path)
        if decoded.unknown and self.unknown_colors == "error":
            raise DatasetError(
                f"{path}: {describe_unknown(decoded.unknown)}. Add the label to labelmap.txt, "
                "fix the mask, or set data.unknown_colors=ignore to leave those pixels out"
            )
        return decoded.mask

    def decode(self, path: Path) -> Decoded:
        array = read_mask_array(path)
        if array.ndim == 3:
            return self._from_colors(array)
        return self._from_values(array)

    def full(self, shape: tuple[int, int], class_index: int) -> np.ndarray:
        return np.full(shape, class_index, dtype=self.dtype)

    def _from_colors(self, rgb: np.ndarray) -> Decoded:
        packed = pack_rgb(rgb)
        pos = np.searchsorted(self._keys, packed).clip(max=len(self._keys) - 1)
        known = self._keys[pos] == packed
        mask = self._key_targets[pos]
        if known.all():
            return Decoded(mask, {})
        mask[~known] = self.ignore_index
        values, counts = np.unique(packed[~known], return_counts=True)
        unknown = {unpack_rgb(v): int(n) for v, n in zip(values, counts, strict=True)}
        return Decoded(mask, unknown)

    def _from_values(self, values: np.ndarray) -> Decoded:
        known = values < len(self.targets)
        mask = self.targets[np.where(known, values, 0)]
        if known.all():
            return Decoded(mask, {})
        mask[~known] = self.ignore_index
        bad, counts = np.unique(values[~known], return_counts=True)
        return Decoded(mask, {(int(v),): int(n) for v, n in zip(bad, counts, strict=True)})


def read_mask_array(path: Path) -> np.ndarray:
    """(H, W, 3) RGB for colour masks, (H, W) integers for single-channel (index) masks."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
                # Pillow would silently truncate the channels to 8 bits.
                raise DatasetError(
                    f"{path}: 16-bit {mode} mask; colour masks must be 8-bit RGB PNGs"
                )
            if mode == "P":  # a palette PNG: its palette colours are the label colours
                return np.asarray(image.convert("RGB"))
            array = np.asarray(image)
    except DatasetError:
        raise
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: mask file not found") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read mask (corrupt or not an image: {err})") from err
    if mode == "RGB":
        return array
    if mode == "RGBA":
        alpha = array[..., 3]
        if (alpha != 255).any():
            raise DatasetError(
                f"{path}: RGBA mask with {int((alpha != 255).sum())} transparent pixel(s); "
                "colour masks must be opaque (alpha 255)"
            )
        return array[..., :3]
    if mode in ("L", "I;16", "I;16B", "I;16L", "I") and array.ndim == 2:
        if array.dtype.kind == "i" and (array < 0).any():
            raise DatasetError(f"{path}: index mask has negative values")
        return array.astype(np.uint16) if array.dtype != np.uint8 else array
    raise DatasetError(
        f"{path}: unsupported mask mode {mode!r} with shape {array.shape}; expected an 8-bit RGB, "
        "opaque RGBA or palette PNG (colour masks), or an 8/16-bit grayscale PNG (class ids)"
    )


def _png_bit_depth(path: Path) -> int | None:
    """Bits per channel from a PNG's IHDR chunk (byte 24), None for other formats."""
    with open(path, "rb") as f:
        header = f.read(25)
    return header[24] if header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 25 else None


def describe_unknown(unknown: dict[tuple[int, ...], int]) -> str:
    """'2 colour(s) not in the labelmap: (1, 2, 3) (40 px), ...', largest first."""
    kind = "colour(s)" if len(next(iter(unknown))) == 3 else "class id value(s)"
    listed = ", ".join(
        f"{value if len(value) == 3 else value[0]} ({n} px)"
        for value, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:10]
    )
    return (
        f"{len(unknown)} {kind} not in the labelmap: {listed}{', ...' if len(unknown) > 10 else ''}"
    )


def colorize(index_mask: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Class-index mask -> (H, W, 3) RGB colour mask with the labelmap colours."""
    palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return palette[index_mask]
