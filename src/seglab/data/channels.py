"""Images of any number of channels: how many a file has, how multi-band TIFFs are read, how a
file's channels meet the network's `model.in_channels`, and which bands a person is shown.

Channel counts, as seglab counts them (`file_channels`):

- 1: a grayscale file (PNG, TIFF, JPEG, BMP, 8 or 16 bits; an alpha channel is dropped);
- 3: any colour file OpenCV reads as colour (RGB, palette, CMYK; an alpha channel dropped);
- N: a multi-band TIFF: N samples per pixel that are not RGB(+alpha) (`YXS`, contiguous or
  planar), or N same-size grayscale pages (`CYX` of ImageJ/OME, or plain pages). OpenCV reads
  at most 4 samples and only the first page, so these are read with tifffile, bands in file
  order. TIFFs of other shapes (Z stacks, time series, pages of RGB) are refused by name.

How a file meets the network (`fit`, applied by the reader): a file of `model.in_channels`
channels is read as it is; a grayscale file for a 3-channel network is repeated to 3 channels,
as seglab always read it (ImageNet weights then apply unchanged, and an export mixing
grayscale and colour photos keeps training); anything else is a `ChannelMismatch` naming the
file, its count and the network's. A 3-channel file is never silently turned grey, nor bands
dropped or invented.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data.errors import DatasetError
from seglab.errors import ConfigError

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
BAND_AXES = "CSQI"  # tifffile axes that stack bands: channel, sample, generic page, sequence
ALPHA_EXTRA_SAMPLES = (1, 2)  # TIFF ExtraSamples: associated / unassociated alpha


class ChannelMismatch(DatasetError):
    """An image whose channel count the network (or the training data) cannot take."""


Source = bytes | Path  # a file's bytes (an upload, or already read) or its path


def is_tiff(source: Source) -> bool:
    if isinstance(source, bytes):
        return source[:4] in TIFF_MAGIC
    try:
        with open(source, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False  # the reader names what is wrong


def _stream(source: Source) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def tiff_bands(source: Source, name: str | Path) -> int | None:
    """The band count of a TIFF that OpenCV cannot read whole (see the module docstring), or
    None for one it reads as seglab always did (gray, RGB, RGBA, palette: one page).

    Pillow's header read answers for those, the usual TIFFs, in ~0.25 ms; tifffile's (~1 ms,
    measured on BBBC039's 16-bit TIFFs) only for the rest."""
    import tifffile

    if _plain_tiff(source):
        return None
    try:
        with tifffile.TiffFile(_stream(source)) as tiff:
            page, series = tiff.pages.first, tiff.series[0]
            axes, shape = series.axes, tuple(series.shape)
            extra = tuple(page.extrasamples or ())
            photometric = int(page.photometric)
    except Exception as err:  # OpenCV's and Pillow's reads then name the damage
        if isinstance(err, MemoryError):
            raise
        return None
    samples = int(page.samplesperpixel)
    alpha = sum(1 for e in extra if e in ALPHA_EXTRA_SAMPLES)
    colour = photometric in (2, 3, 5, 6)  # RGB, palette, CMYK, YCbCr
    plain = samples - alpha == 1 or (samples - alpha == 3 and colour)
    if len(shape) == 2 or (axes == "YXS" and plain):
        return None  # one page of gray or colour (+alpha): OpenCV's read
    if len(axes) == 3 and axes.endswith("YX") and axes[0] in BAND_AXES:
        return shape[0]  # planar samples or grayscale pages
    if axes == "YXS":
        return shape[2]
    raise DatasetError(
        f"{name}: a TIFF of axes {axes} and shape {list(shape)}; seglab reads one 2-D image of "
        "any number of bands (YXS, CYX or pages of one plane each). Save each image as such a "
        "TIFF (e.g. one Z plane or time point per file)"
    )


def _plain_tiff(source: Source) -> bool:
    """Whether Pillow finds one page of gray or colour samples (+alpha), as OpenCV reads them."""
    try:
        with Image.open(_stream(source)) as image:
            tags = image.tag_v2
            samples, photometric = int(tags.get(277, 1)), int(tags.get(262, 1))
            extra = tags.get(338, ())
            extra = extra if isinstance(extra, tuple) else (extra,)
            alpha = sum(1 for e in extra if e in ALPHA_EXTRA_SAMPLES)
            single = getattr(image, "n_frames", 1) == 1
    except Exception:  # Pillow cannot read it (e.g. 5 samples): tifffile decides
        return False
    colour = photometric in (2, 3, 5, 6)  # RGB, palette, CMYK, YCbCr
    return single and (samples - alpha == 1 or (samples - alpha == 3 and colour))


def read_bands(source: Source, name: str | Path) -> np.ndarray:
    """A multi-band TIFF's pixels as (H, W, bands), in file order, at their stored depth."""
    import tifffile

    try:
        with tifffile.TiffFile(_stream(source)) as tiff:
            series = tiff.series[0]
            image = series.asarray()
            axes = series.axes
    except Exception as err:
        if isinstance(err, MemoryError):
            raise
        hint = " (pip install imagecodecs for its compression)" if "imagecodecs" in str(err) else ""
        raise DatasetError(f"{name}: cannot read the multi-band TIFF{hint}: {err}") from err
    if axes != "YXS":
        image = np.moveaxis(image, 0, -1)
    return np.ascontiguousarray(image)


def file_channels(source: Source, name: str | Path) -> int:
    """How many channels seglab reads from the file (1, 3 or a TIFF's bands), from its header;
    0 when the header cannot be read (the decode then names the damage)."""
    if is_tiff(source):
        bands = tiff_bands(source, name)
        if bands is not None:
            return bands
    try:
        with Image.open(_stream(source)) as image:
            return 1 if image.mode in GRAYSCALE_MODES else 3
    except (OSError, SyntaxError, ValueError):
        return 0  # unknown: the decode reports what is wrong with the file


def fits(found: int, channels: int) -> bool:
    """Whether a file of `found` channels is read for a network of `channels`: the same count,
    or grayscale repeated to 3."""
    return found == channels or (found == 1 and channels == 3)


def mismatch(name: str | Path, found: int, channels: int, whose: str) -> ChannelMismatch:
    """The error for a file the network cannot take; `whose`: where `channels` comes from."""
    return ChannelMismatch(
        f"{name}: image of {found} channel(s), but {whose} takes {channels}. Give images of "
        f"{channels} channel(s) (grayscale ones are repeated for 3-channel models), or train a "
        f"model on images like this one (model.in_channels=auto reads the count from the data)"
    )


def resolve_channels(option: int | str, counts: Mapping[str, Sequence[tuple[str, int]]]) -> int:
    """`model.in_channels` for the data: `counts` maps split -> [(image, channels)].

    `auto`: the training images' count, where grayscale and colour files together (or
    grayscale alone) make 3 (as seglab always read them); a file whose count differs from the
    majority's is a ChannelMismatch naming it. A number: every image must fit it (`fits`)."""
    every = [item for split in counts.values() for item in split]
    if option == "auto":
        train = counts.get("train") or every
        found = Counter(1 if c == 1 else c for _, c in train)
        multi = Counter({c: n for c, n in found.items() if c != 1})
        channels = multi.most_common(1)[0][0] if multi else 3
        whose = f"the training data (most images have {channels} channels)"
    else:
        channels, whose = int(option), f"model.in_channels={option}"
    wrong = [(name, c) for name, c in every if not fits(c, channels)]
    if wrong:
        name, found = wrong[0]
        error = mismatch(name, found, channels, whose)
        more = f" ({len(wrong)} such images; the first is named)" if len(wrong) > 1 else ""
        raise ChannelMismatch(f"{error}{more}")
    return channels


def display_rgb(image: np.ndarray, bands: Sequence[int] | None = None) -> np.ndarray:
    """An (H, W, C) uint8 image as RGB (H, W, 3) for people: overlays, the report's gallery,
    W&B images. 3 channels as they are; 1 repeated; otherwise `bands` (three band indices,
    `predict.overlay_bands`), by default the first three bands as red, green and blue (of 2
    bands, the second is repeated). Only what is shown changes; the network sees every band."""
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if bands is None:
        if channels == 3:
            return image
        if channels == 1:
            return np.repeat(image, 3, axis=2)
        bands = [min(i, channels - 1) for i in range(3)]
    bands = [int(b) for b in bands]
    if len(bands) != 3 or any(not 0 <= b < channels for b in bands):
        raise ConfigError(
            f"overlay_bands={bands}: give three band indices in [0, {channels - 1}] "
            f"(the images have {channels} channels), e.g. [0, 1, 2]"
        )
    return np.ascontiguousarray(image[..., bands])
