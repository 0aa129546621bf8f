"""Mask files -> class-index masks: exact, vectorised, and loud about anything unexpected.

Mask values refer to the labelmap's labels: a colour (RGB, opaque RGBA, or a palette PNG's
palette colour) or, in a single-channel PNG, the label's position in the labelmap (Datumaro's
reading of grayscale masks). A lookup table then maps each label to its training class index, or
to `ignore_index` for ignored labels.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seglab.data.errors import DatasetError

UNKNOWN_POLICIES = ("error", "ignore")


def index_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 while class ids and the ignore value 255 fit, uint16 beyond."""
    return np.uint8 if num_classes < 255 else np.uint16


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """One integer per pixel of an (..., 3) uint8 RGB array, `R | G << 8 | B << 16`.

    Each pixel's key is read as a little-endian 32-bit word straight from the pixel buffer (stride
    3 bytes, top byte masked off): one pass, 3x faster than shifting the channels together.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    flat = rgb.reshape(-1)
    count = flat.size // 3
    keys = np.empty(count, np.intp)
    if count > 1:  # the last pixel's word would read one byte past the buffer: do it apart
        words = np.ndarray((count - 1,), dtype="<u4", buffer=flat, strides=(3,))
        np.bitwise_and(words, 0xFFFFFF, out=keys[:-1], casting="unsafe")
    if count:
        r, g, b = (int(v) for v in flat[-3:])
        keys[-1] = r | g << 8 | b << 16
    return keys.reshape(rgb.shape[:-1])


def unpack_rgb(key: int) -> tuple[int, int, int]:
    key = int(key)
    return key & 255, (key >> 8) & 255, (key >> 16) & 255


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
        colour_labels: bool = False,
    ):
        """`label_targets[i]` is the class index (or ignore_index) of the labelmap's label i.

        `colour_labels`: the labels come from a labelmap with colours, so a grayscale mask whose
        values are no label's position is more likely a wrong kind of mask than a typo; the
        message then says so (see `grayscale_hint`).
        """
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
        self.colour_labels = colour_labels
        self.targets = np.asarray(label_targets, dtype=self.dtype)
        self._colors = np.asarray(label_colors, dtype=np.uint8).reshape(-1, 3)
        # Slot 0 is "not in the labelmap"; slot i + 1 is label i.
        self._slot_targets = np.concatenate([[ignore_index], self.targets]).astype(self.dtype)
        self._build_lut()

    def _build_lut(self) -> None:
        """A table over all 2^24 colours -> label slot: one gather per pixel, 16 MB per process
        (a binary search over the labelmap was 3x slower than decoding the PNG itself)."""
        lut = np.zeros(1 << 24, np.uint8 if len(self._colors) < 256 else np.uint16)
        lut[pack_rgb(self._colors)] = np.arange(1, len(self._colors) + 1)
        self._lut = lut

    def __getstate__(self) -> dict:
        """Data-loader workers rebuild the table rather than receive 16 MB through a pipe."""
        return {**self.__dict__, "_lut": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_lut()

    def __call__(self, path: Path) -> np.ndarray:
        """The class-index mask of `path`; unknown values raise unless unknown_colors=ignore."""
        decoded = self.decode(path)
        if decoded.unknown and self.unknown_colors == "error":
            hint = self.fix_hint(decoded.unknown)
            raise DatasetError(f"{path}: {describe_unknown(decoded.unknown)}. {hint}")
        return decoded.mask

    def decode(self, path: Path) -> Decoded:
        array = read_mask_array(path)
        if array.ndim == 3:
            return self._from_colors(array)
        return self._from_values(array)

    def fix_hint(self, unknown: dict[tuple[int, ...], int]) -> str:
        """How to fix masks with these unknown values."""
        if self.colour_labels and len(next(iter(unknown))) == 1:
            return grayscale_hint()
        return (
            "Add the label to labelmap.txt, fix the mask, or set data.unknown_colors=ignore to "
            "leave those pixels out"
        )

    def full(self, shape: tuple[int, int], class_index: int) -> np.ndarray:
        return np.full(shape, class_index, dtype=self.dtype)

    def _from_colors(self, rgb: np.ndarray) -> Decoded:
        packed = pack_rgb(rgb)
        slots = np.take(self._lut, packed)  # np.take: 2x faster than fancy indexing here
        mask = np.take(self._slot_targets, slots)  # unknown colours (slot 0) -> ignore_index
        unknown_px = slots == 0
        if not unknown_px.any():
            return Decoded(mask, {})
        values, counts = np.unique(packed[unknown_px], return_counts=True)
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
    if _png_header(path) == (8, PNG_TRUECOLOR):  # CVAT's own kind: OpenCV decodes it ~2x faster
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise DatasetError(f"{path}: cannot read mask (corrupt PNG)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("RGB", "RGBA") and _png_header(path)[0] == 16:
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


PNG_TRUECOLOR = 2  # IHDR colour type of an RGB PNG without alpha


def _png_header(path: Path) -> tuple[int | None, int | None]:
    """(bits per channel, colour type) from a PNG's IHDR chunk; (None, None) for other files."""
    try:
        with open(path, "rb") as f:
            header = f.read(26)
    except OSError:
        return None, None  # Pillow reports the missing or unreadable file with its own words
    if header[:8] != b"\x89PNG\r\n\x1a\n" or len(header) < 26:
        return None, None
    return header[24], header[25]


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


def grayscale_hint() -> str:
    """A single-channel mask in an export whose labelmap gives colours: usually a mask saved by
    another tool (0/255 binary masks, class ids), not CVAT's RGB masks."""
    return (
        "The mask looks grayscale (one channel) although the labelmap gives every label a "
        "colour: its values are read as positions in the labelmap (0 = first label), and these "
        "are none. Save the masks as RGB PNGs in the labelmap's colours, as CVAT exports them; or, "
        "if the values are class ids, replace labelmap.txt by a classes.txt naming the classes "
        "in id order (the index layout)"
    )


def colorize(index_mask: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Class-index mask -> (H, W, 3) RGB colour mask with the labelmap colours."""
    palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return palette[index_mask]


def color_png(index_mask: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> bytes:
    """Class-index mask -> PNG bytes of its colour mask: an indexed PNG, one byte per pixel with
    the labelmap colours as its palette (as Pascal VOC's masks are), which OpenCV, Pillow, CVAT
    and browsers decode to the same RGB as a three-channel file; past 256 classes an RGB PNG.

    One channel to compress instead of three: ~4.5 ms of a 512² prediction's writing went into
    the RGB file (benchmarks/README.md, inference.py)."""
    palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    buffer = io.BytesIO()
    if len(palette) <= 256:
        image = Image.fromarray(np.ascontiguousarray(index_mask, dtype=np.uint8))  # L, then P
        image.putpalette(palette.ravel().tolist())
        image.save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(colorize(index_mask, palette)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
