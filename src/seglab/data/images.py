"""Check an image file before training reads it: readable, complete, and not too large.

Training decodes images with OpenCV, which decodes a truncated JPEG without an error: the missing
rows come out grey and the model learns from them. Pillow's header read (what the scan used to
do) does not notice either. So the scan checks every image here, at a measured cost (see
benchmarks/README.md, "the dataset scan"):

- JPEG: the file must end with the End Of Image marker FFD9 (trailing zero padding allowed).
  Reading the last bytes costs ~0.01 ms; only a file without the marker is decoded in full by
  Pillow, which then decides (a "motion photo" with a video after the marker decodes fine and is
  accepted; a cut-off file raises "image file is truncated").
- every other format (PNG, TIFF, BMP) is decoded in full by Pillow: TIFF and BMP have no end
  marker, and PNGs were already decoded by the EXIF lookup (Pillow loads a PNG to find its eXIf
  chunk), so this costs nothing more for them.

Not detected: damage inside a JPEG's compressed data when the file still ends properly (JPEG has
no checksum; decoders show it as garbled blocks and so does CVAT).

Multi-band TIFFs (more bands than OpenCV and Pillow read, `seglab.data.channels`) are checked
and decoded in full by tifffile instead.

TIFFs of samples the reader cannot map to 8 bits (32-bit or signed integers, floats) are refused
from their header tags (`tiff_depth_problem`).

Images over `max_image_pixels()` are refused before decoding anything: a 20000x20000 photo is
1.2 GB of RGB per loader worker, and training shrinks it to `data.image_size` anyway.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data.channels import is_tiff, read_bands, tiff_bands
from seglab.data.errors import DatasetError
from seglab.data.intensity import unsupported_depth

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")  # any case
MAX_PIXELS_ENV = "SEGLAB_MAX_IMAGE_PIXELS"
# Pillow's own default limit (1 GiB / 4 bytes / 3 channels; it warns above it and refuses at
# twice it): ~9459x9459, 268 MB decoded as RGB per image and loader worker.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
EXIF_ORIENTATION = 0x0112
ROTATED_90 = (5, 6, 7, 8)  # orientations that swap width and height
JPEG_END = b"\xff\xd9"
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: phones' multi-picture JPEGs, the same end marker
TAIL_BYTES = 4096  # enough for the marker behind a block of zero padding
TIFF_BITS_PER_SAMPLE, TIFF_SAMPLE_FORMAT = 258, 339  # SampleFormat 1 = unsigned integer


def max_image_pixels() -> int:
    """The pixel limit: $SEGLAB_MAX_IMAGE_PIXELS, or Pillow's default of 89.5 Mpx."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise DatasetError(
            f"{MAX_PIXELS_ENV}={text!r}: give a positive number of pixels, e.g. 200000000 "
            f"(default {DEFAULT_MAX_IMAGE_PIXELS})"
        )
    return value


@contextmanager
def pillow_limit_off() -> Iterator[None]:
    """Turn off Pillow's decompression-bomb check while the scan runs, so that it can report
    every image over *seglab's* limit by name and size (Pillow's check raises without the file's
    name and aborts the whole scan). The scan checks each image's size before decoding it."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def too_large(path: Path, what: str, width: int, height: int, limit: int) -> str | None:
    """The problem text for a file over the pixel limit, else None."""
    if width * height <= limit:
        return None
    return (
        f"{path}: {what} is {width}x{height} = {_pixels(width * height)}, over the limit of "
        f"{_pixels(limit)} ({MAX_PIXELS_ENV}). Training shrinks every image to "
        "data.image_size, so an image this large is best cut into tiles (e.g. 2048x2048, its "
        f"mask alike) and the tiles trained on; or raise {MAX_PIXELS_ENV} if the memory is there "
        "(each loader worker holds a decoded image)"
    )


def _pixels(n: int) -> str:
    return f"{n / 1e6:.4g} Mpx" if n >= 100_000 else f"{n} px"


def check_image(
    path: Path, limit: int, data: bytes | None = None, decode_all: bool = True
) -> tuple[int, int]:
    """(width, height) as OpenCV and CVAT show the image (EXIF orientation applied).

    Raises DatasetError naming the file when it cannot be read, is truncated or corrupt, or has
    more than `limit` pixels. `data`: the file's bytes when they are already in memory (an
    upload to the server); `path` then only names it in messages. `decode_all=False` leaves the
    full decode of formats other than JPEG to the caller's OpenCV decode, which fails on a
    truncated PNG or TIFF by itself (only a truncated JPEG decodes without an error).
    """
    if is_tiff(data if data is not None else path):
        bands = tiff_bands(data if data is not None else path, path)
        if bands is not None:  # beyond Pillow and OpenCV: tifffile reads it
            return _check_bands(path, limit, data, decode_all)
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:  # the header
            width, height = image.size
            problem = too_large(path, "image", width, height, limit)
            if problem:
                raise DatasetError(problem)
            # OpenCV, like CVAT, shows the image turned by its EXIF orientation; so must the check.
            if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_90:
                width, height = height, width
            depth = tiff_depth_problem(image)
            if depth:
                raise unsupported_depth(path, depth)
            if image.format in JPEG_FORMATS:
                if not _ends_with_jpeg_marker(path, data):
                    image.load()
            elif decode_all:
                image.load()
    except DatasetError:
        raise
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: image file not found") from err
    except (OSError, SyntaxError, ValueError) as err:
        if "truncated" in str(err):
            size = len(data) if data is not None else path.stat().st_size
            raise DatasetError(
                f"{path}: image file is truncated ({size} bytes; {err}). OpenCV "
                "would train on it with grey where the data is missing: copy the file again "
                "from its source, or re-export it from CVAT"
            ) from err
        raise DatasetError(
            f"{path}: cannot read image (corrupt or not an image: {err}); replace the file"
        ) from err
    return width, height


def _check_bands(path: Path, limit: int, data: bytes | None, decode_all: bool) -> tuple[int, int]:
    """`check_image` for a multi-band TIFF (`seglab.data.channels`), by tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data) if data is not None else path) as tiff:
            series = tiff.series[0]
            dtype, shape, axes = series.dtype, series.shape, series.axes
    except Exception as err:
        raise DatasetError(
            f"{path}: cannot read image (corrupt TIFF: {err}); replace the file"
        ) from err
    height, width = (shape[0], shape[1]) if axes == "YXS" else (shape[1], shape[2])
    problem = too_large(path, "image", width, height, limit)
    if problem:
        raise DatasetError(problem)
    if dtype not in (np.uint8, np.uint16):
        raise unsupported_depth(path, f"{dtype} values")
    if decode_all:
        read_bands(data if data is not None else path, path)
    return width, height


def tiff_depth_problem(image: Image.Image) -> str | None:
    """What makes a TIFF's samples unreadable to seglab's reader (32-bit or signed integers,
    floats: see `seglab.data.intensity`), from its header tags, else None. The scan refuses
    them here, naming every such file, rather than a loader worker at the first batch."""
    if image.format != "TIFF":
        return None
    tags = getattr(image, "tag_v2", {})
    kind, bits = tags.get(TIFF_SAMPLE_FORMAT, 1), tags.get(TIFF_BITS_PER_SAMPLE, 1)
    kind = kind[0] if isinstance(kind, tuple) else kind
    bits = bits[0] if isinstance(bits, tuple) else bits
    if kind == 1 and bits <= 16:
        return None
    name = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}.get(kind, "unknown")
    return f"{bits}-bit {name} samples"


def _ends_with_jpeg_marker(path: Path, data: bytes | None = None) -> bool:
    if data is not None:
        tail = data[-TAIL_BYTES:]
    else:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            tail = f.read()
    return tail.rstrip(b"\x00").endswith(JPEG_END)
