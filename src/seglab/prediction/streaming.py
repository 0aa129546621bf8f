"""predict.py on images too large for whole-image logits: `mode=slide` images of more than
`stream_pixels` pixels are predicted one at a time, strip by strip (`Predictor.slide_strips`),
and each finished strip goes straight into the output files. No full-image float array exists:
the image itself (uint8 RGB, read once) is the largest thing in memory.

The files are those of every other image, with the same names and formats and the same pixels
(tests/test_predict.py compares them): the index and colour PNGs are encoded row by row here
(`PngStream`; OpenCV encodes a PNG only from a whole array, and the colour image of a 20000x20000
mask would be 1.2 GB), the float16 probabilities are written into their .npy strip by strip, and
the overlay is blended into the image's own rows once no tile reads them any more, then encoded
as JPEG from that buffer. Each file is written under a partial name and renamed only when the
whole image is done (`seglab.atomic`): a failure or a kill leaves the previous outputs whole.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from seglab.atomic import atomic_path
from seglab.data.dataset import read_image
from seglab.data.images import (
    EXIF_ORIENTATION,
    ROTATED_90,
    TIFF_BITS_PER_SAMPLE,
    pillow_limit_off,
)
from seglab.data.intensity import Intensity
from seglab.data.masks import colorize, index_dtype
from seglab.prediction.inputs import WIDE_MODES
from seglab.prediction.predictor import Predictor, to_labels, to_probabilities
from seglab.prediction.writers import MaskWriter, _imwrite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_BYTES = 1 << 20  # compressed data per IDAT chunk


def image_pixels(path: Path) -> int | None:
    """Width x height from the file's header (nothing decoded), None when Pillow cannot tell:
    such a file goes the usual way, whose reader reports it if it is unreadable."""
    header = _header(path)
    return None if header is None else header[0] * header[1]


def read_large_image(path: Path, intensity: Intensity | None) -> np.ndarray:
    """An image as `read_image` reads it, decoded straight into one array: `read_image`
    (`cv2.imdecode`) returns an array that OpenCV's Python binding copies, 2x the image at the
    peak (1.5 GB for 16384x16384 RGB); `cv2.imread` into a given array does not. Channels are
    swapped to RGB a block of rows at a time for the same reason. Only 8-bit files read with
    `data.intensity` auto or shift (which leave 8-bit values as they are) go this way; others
    (16-bit, a `range` rule) are read by `read_image`. Raises DatasetError naming the file."""
    header = _header(path)
    rule = "auto" if intensity is None else intensity.rule
    if header is None or not header[2] or rule not in ("auto", "shift"):
        return read_image(path, intensity)
    width, height, _ = header
    image = np.empty((height, width, 3), np.uint8)
    try:
        decoded = cv2.imread(str(path), image, cv2.IMREAD_COLOR)
    except cv2.error:
        decoded = None
    if decoded is None or decoded.size == 0 or decoded.dtype != np.uint8:
        return read_image(path, intensity)  # which raises the usual error if it cannot either
    swap_channels(decoded)
    return decoded


def swap_channels(image: np.ndarray, rows: int = 256) -> None:
    """BGR <-> RGB in place, a block of rows at a time: OpenCV copies the whole source of an
    in-place `cvtColor` first (0.8 GB more at 16384x16384, measured), a block only a block."""
    for top in range(0, image.shape[0], rows):
        block = image[top : top + rows]
        cv2.cvtColor(block, cv2.COLOR_BGR2RGB, dst=block)


def _header(path: Path) -> tuple[int, int, bool] | None:
    """(width, height, 8 bits or fewer per sample) as OpenCV will decode the file (EXIF turns
    applied), from its header; None when Pillow cannot parse it."""
    try:
        with pillow_limit_off(), Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_90:
                width, height = height, width
            if image.format == "PNG":  # Pillow shows 16-bit RGB PNGs as mode RGB: ask IHDR
                with open(path, "rb") as f:
                    eight_bit = f.read(25)[24] <= 8
            elif image.format == "TIFF":
                bits = getattr(image, "tag_v2", {}).get(TIFF_BITS_PER_SAMPLE, 1)
                eight_bit = max(bits if isinstance(bits, tuple) else (bits,)) <= 8
            else:
                eight_bit = image.format in ("JPEG", "MPO", "BMP") and image.mode not in WIDE_MODES
            return width, height, eight_bit
    except Exception:  # any header Pillow cannot parse: OpenCV decides later
        return None


def streamed(paths: list[Path], limit: int | None) -> list[Path]:
    """The images of more than `limit` pixels (none when `limit` is None)."""
    if limit is None:
        return []
    return [path for path in paths if (image_pixels(path) or 0) > limit]


class PngStream:
    """A PNG written row by row: 8- or 16-bit grayscale, 8-bit RGB, or 8-bit indices with a
    `palette` of (R, G, B) entries (the colour mask, as `seglab.data.masks.color_png` writes
    it). Like OpenCV's default PNG settings (Sub filter, zlib level 1, run-length strategy),
    fast rather than small."""

    def __init__(
        self, file: BinaryIO, width: int, height: int, dtype: np.dtype, channels: int,
        palette: np.ndarray | None = None,
    ):  # fmt: skip
        self.file, self.width, self.channels = file, width, channels
        self.big_endian = np.dtype(dtype).newbyteorder(">")
        depth = 8 * np.dtype(dtype).itemsize
        color_type = 2 if channels == 3 else 3 if palette is not None else 0
        header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
        file.write(PNG_SIGNATURE)
        self._chunk(b"IHDR", header)
        if palette is not None:
            self._chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
        self._zlib = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, rows: np.ndarray) -> None:
        """(rows, width) or (rows, width, 3) pixels, the next rows of the image."""
        raw = np.ascontiguousarray(rows, self.big_endian).view(np.uint8).reshape(len(rows), -1)
        bpp = raw.shape[1] // self.width
        filtered = np.empty((len(rows), raw.shape[1] + 1), np.uint8)
        filtered[:, 0] = 1  # Sub: each byte minus the same byte of the pixel before
        filtered[:, 1 : 1 + bpp] = raw[:, :bpp]
        np.subtract(raw[:, bpp:], raw[:, :-bpp], out=filtered[:, 1 + bpp :])
        self._add(self._zlib.compress(filtered.data))

    def close(self) -> None:
        self._add(self._zlib.flush())
        self._flush_idat()
        self._chunk(b"IEND", b"")

    def _add(self, data: bytes) -> None:
        if data:
            self._pending.append(data)
            self._size += len(data)
        if self._size >= IDAT_BYTES:
            self._flush_idat()

    def _flush_idat(self) -> None:
        if self._pending:
            self._chunk(b"IDAT", b"".join(self._pending))
            self._pending, self._size = [], 0

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.file.write(struct.pack(">I", len(data)) + kind + data)
        self.file.write(struct.pack(">I", zlib.crc32(kind + data)))


class NpyStream:
    """A (C, H, W) float16 .npy, as `np.save` writes it, filled strip by strip."""

    def __init__(self, file: BinaryIO, shape: tuple[int, int, int]):
        self.file, self.shape = file, shape
        header = {"descr": "<f2", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(file, header)
        self.offset = file.tell()
        file.truncate(self.offset + 2 * int(np.prod(shape)))

    def write(self, top: int, strip: np.ndarray) -> None:
        """(C, rows, W) float16 values for rows `top` onwards, one seek per class."""
        _, height, width = self.shape
        for c, plane in enumerate(strip.astype("<f2", copy=False)):
            self.file.seek(self.offset + 2 * (c * height + top) * width)
            self.file.write(np.ascontiguousarray(plane).data)


def predict_streamed(
    predictor: Predictor,
    image: np.ndarray,
    relative: Path,
    writer: MaskWriter,
    keep_labels: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> np.ndarray | None:
    """Predict one large RGB image strip by strip and write `writer`'s outputs for it as the
    strips come. `image` is used up: the overlay is blended into its rows. Returns the class
    mask when `keep_labels` (scoring, the CVAT export need it; H x W bytes), else None;
    `on_rows(n)` is told of every n rows written (a progress bar)."""
    height, width = image.shape[:2]
    stem = writer.stem(relative)
    kinds = writer.kinds
    dtype = np.dtype(index_dtype(predictor.num_classes))
    labels = np.empty((height, width), dtype) if keep_labels else None
    with ExitStack() as files:

        def open_partial(suffix: str) -> BinaryIO:
            partial = files.enter_context(atomic_path(stem.with_name(stem.name + suffix)))
            return files.enter_context(open(partial, "r+b"))

        pngs: dict[str, PngStream] = {}
        if "index" in kinds:
            pngs["index"] = PngStream(open_partial("_index.png"), width, height, dtype, 1)
        if "color" in kinds:
            indexed = len(writer.palette) <= 256  # as `color_png`: RGB past 256 classes
            palette = writer.palette if indexed else None
            pngs["color"] = PngStream(
                open_partial("_color.png"), width, height, np.uint8, 1 if indexed else 3, palette
            )
        probs = None
        if "probs" in kinds:
            shape = (predictor.num_classes, height, width)
            probs = NpyStream(open_partial("_probs.npy"), shape)
        for top, logits in predictor.slide_strips(image):
            rows = to_labels(logits, predictor.num_classes)
            bottom = top + len(rows)
            if labels is not None:
                labels[top:bottom] = rows
            if "index" in pngs:
                pngs["index"].write(rows)
            if "color" in pngs:
                pngs["color"].write(
                    rows if pngs["color"].channels == 1 else colorize(rows, writer.palette)
                )
            if "overlay" in kinds:  # no tile reads these rows again (slide_strips)
                colored, part = colorize(rows, writer.palette), image[top:bottom]
                cv2.addWeighted(part, 1.0 - writer.alpha, colored, writer.alpha, 0.0, dst=part)
            if probs is not None:
                probs.write(top, to_probabilities(logits).half().cpu().numpy())
            if on_rows is not None:
                on_rows(len(rows))
        for png in pngs.values():
            png.close()
        if "overlay" in kinds:
            swap_channels(image)  # RGB -> BGR for OpenCV's encoder
            _imwrite(stem.with_name(f"{stem.name}_overlay.jpg"), image)
    return labels
