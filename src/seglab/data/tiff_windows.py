"""Windows of tiled TIFFs, read without decoding the rest of the image.

`data.sampling=tile` trains on windows of large images at their native resolution. A tiled
TIFF (whole-slide scans, orthophotos, most large microscopy and GIS files) stores its pixels
in independent compressed tiles, so a window needs only the tiles it overlaps: each is read
from its file offset and decoded by tifffile (`TiffPage.decode`), and the window is cut from
them. Any other image is decoded whole by `read_image` (and cached by `seglab.data.tiles`).

The window must come out exactly as the same region of `read_image`'s whole-image read
(tests/test_tiles.py checks it), so the `data.intensity` rule is applied as it would be to the
whole image:

- `range`, `shift`, and `auto` on 8-bit images map each value on its own: applied per window.
- The percentile rules (`auto` on 16-bit images, `percentile`) stretch between the *whole
  image's* percentiles, which no window knows. They are computed once per image from a
  histogram of every tile, decoded one at a time (a full decoding pass, but never the whole
  image in memory), and kept with the reader; the percentiles of a histogram are exactly
  `seglab.data.intensity.percentiles` of the whole image. Bands are stretched as the whole
  read stretches them: a grayscale or colour image on one histogram (a colour image whose
  bands are all equal on its first band's, as `Intensity.apply` does), a multi-band image
  per band.

Read by window: one page of one 2-D plane (`YX` or `YXS`, contiguous samples), 8- or 16-bit
unsigned, grayscale, RGB without alpha, or any number of bands, whose tiles tifffile can
decode here (a codec missing from imagecodecs means the whole-image read instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seglab.data.channels import fits, is_tiff, mismatch
from seglab.data.errors import DatasetError
from seglab.data.intensity import DEFAULT_PERCENTILES, Intensity, histogram_percentiles, stretch

MINISBLACK, RGB = 1, 2  # TIFF photometric interpretations read by window
CONTIGUOUS = 1  # planar configuration: samples interleaved per pixel


@dataclass
class TiledTiff:
    """A tiled TIFF's layout; `window` reads a region at the file's depth, (h, w, samples)."""

    path: Path
    height: int
    width: int
    samples: int
    dtype: np.dtype
    tile_h: int
    tile_w: int
    per_band: bool  # multi-band (not gray, not RGB): each band stretched on its own
    _bounds: list[tuple[float, float]] | None = field(default=None, repr=False)

    @classmethod
    def probe(cls, path: Path) -> TiledTiff | None:
        """The layout when `path` is a TIFF this module reads by window, else None (the
        whole-image read then decodes it, and names any problem)."""
        import tifffile

        if not is_tiff(Path(path)):
            return None
        try:
            with tifffile.TiffFile(path) as tiff:
                page = tiff.pages.first
                if len(tiff.pages) != 1 or not page.is_tiled or page.imagedepth != 1:
                    return None
                alpha = any(int(e) in (1, 2) for e in (page.extrasamples or ()))
                photometric, samples = int(page.photometric), int(page.samplesperpixel)
                if alpha or (int(page.planarconfig) != CONTIGUOUS and samples > 1):
                    return None
                if page.dtype not in (np.uint8, np.uint16) or photometric not in (MINISBLACK, RGB):
                    return None
                tiled = cls(
                    Path(path), int(page.imagelength), int(page.imagewidth), samples,
                    np.dtype(page.dtype), int(page.tilelength), int(page.tilewidth),
                    per_band=not (samples == 1 or (samples == 3 and photometric == RGB)),
                )  # fmt: skip
                tiled._decode(tiff, 0)  # a codec tifffile lacks here: read whole instead
        except Exception as err:
            if isinstance(err, MemoryError):
                raise
            return None
        return tiled

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_w)

    def _decode(self, tiff: object, index: int) -> np.ndarray:
        """Tile `index` (row-major) as (tile_h, tile_w, samples), padded at the image's edges."""
        page = tiff.pages.first  # type: ignore[attr-defined]
        handle = tiff.filehandle  # type: ignore[attr-defined]
        handle.seek(page.dataoffsets[index])
        data = handle.read(page.databytecounts[index])
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        return np.asarray(segment).reshape(self.tile_h, self.tile_w, self.samples)

    def window(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The pixels of rows [top, top+height) and columns [left, left+width), within the
        image, at the file's depth: only the tiles they overlap are read and decoded."""
        import tifffile

        if top < 0 or left < 0 or top + height > self.height or left + width > self.width:
            raise DatasetError(
                f"{self.path}: window {width}x{height} at ({left}, {top}) is outside the "
                f"{self.width}x{self.height} image"
            )
        out = np.empty((height, width, self.samples), self.dtype)
        rows = range(top // self.tile_h, -(-(top + height) // self.tile_h))
        cols = range(left // self.tile_w, -(-(left + width) // self.tile_w))
        with tifffile.TiffFile(self.path) as tiff:
            for row in rows:
                for col in cols:
                    tile = self._decode(tiff, row * self.tiles_across + col)
                    y0, x0 = row * self.tile_h, col * self.tile_w
                    ys = slice(max(top, y0), min(top + height, y0 + self.tile_h))
                    xs = slice(max(left, x0), min(left + width, x0 + self.tile_w))
                    out[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = tile[
                        ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0
                    ]
        return out

    def histograms(self) -> tuple[np.ndarray, bool]:
        """(per-band value histograms (samples, levels), whether every band equals the first
        everywhere), from every tile decoded one at a time."""
        import tifffile

        levels = np.iinfo(self.dtype).max + 1
        counts = np.zeros((self.samples, levels), np.int64)
        equal = True
        with tifffile.TiffFile(self.path) as tiff:
            rows, across = -(-self.height // self.tile_h), self.tiles_across
            for index in range(rows * across):
                y0, x0 = (index // across) * self.tile_h, (index % across) * self.tile_w
                tile = self._decode(tiff, index)[: self.height - y0, : self.width - x0]
                for band in range(self.samples):
                    counts[band] += np.bincount(tile[..., band].ravel(), minlength=levels)
                if equal and self.samples > 1:
                    equal = all(
                        np.array_equal(tile[..., 0], tile[..., b]) for b in range(1, self.samples)
                    )
        return counts, equal

    def bounds(self, rule: Intensity) -> list[tuple[float, float]]:
        """The whole image's stretch bounds under a percentile rule: one (low, high) per band
        for multi-band images, else one for all; computed once (see the module docstring)."""
        if self._bounds is None:
            qs = DEFAULT_PERCENTILES if rule.rule == "auto" else (rule.low, rule.high)
            counts, equal = self.histograms()
            if self.per_band:
                self._bounds = [histogram_percentiles(c, qs) for c in counts]
            else:
                together = counts[0] if equal else counts.sum(axis=0)
                self._bounds = [histogram_percentiles(together, qs)]
        return self._bounds


@dataclass
class WindowReader:
    """Windows of one tiled TIFF as `read_image` would give them: uint8 (h, w, `channels`),
    mapped by the `intensity` rule as the whole image is (see the module docstring)."""

    tiff: TiledTiff
    intensity: Intensity
    channels: int

    def __post_init__(self) -> None:
        found = self.tiff.samples
        if not fits(found, self.channels):
            raise mismatch(self.tiff.path, found, self.channels, "the model")

    @property
    def shape(self) -> tuple[int, int]:
        return self.tiff.height, self.tiff.width

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        raw = self.tiff.window(top, left, height, width)
        image = self._map(raw)
        if image.shape[2] != self.channels:  # grayscale for a 3-channel network
            image = np.repeat(image, self.channels, axis=2)
        return image

    def _map(self, raw: np.ndarray) -> np.ndarray:
        rule = self.intensity
        if rule.rule == "auto" and raw.dtype == np.uint8:
            return raw
        if rule.rule == "shift":
            return raw if raw.dtype == np.uint8 else (raw >> 8).astype(np.uint8)
        if rule.rule == "range":
            return stretch(raw, rule.low, rule.high)
        bounds = self.tiff.bounds(rule)
        if len(bounds) == 1:
            return stretch(raw, *bounds[0])
        return np.stack([stretch(raw[..., b], *bounds[b]) for b in range(raw.shape[2])], axis=2)
