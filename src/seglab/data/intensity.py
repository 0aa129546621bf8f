"""`data.intensity`: how an image of more than 8 bits becomes the uint8 image the network sees.

The pipeline is uint8 from the loaders to the device (`seglab.preprocessing`), so a 12- or
16-bit image is mapped to 8 bits once, when it is read (`seglab.data.dataset.read_image`, the
one reader of training, predict.py, rank and the server; the CVAT function receives frames CVAT
has already decoded, as 8-bit PIL images). The rule is stored
in the checkpoint (and an ONNX model's metadata), so every reader of a model maps images as its
training did. Rules, as written in the config:

- `auto` (the default): 8-bit images untouched (bit-identical to reading them without a rule);
  16-bit images stretched per image between their 0.1th and 99.9th percentiles. Why: 12-bit
  data in a 16-bit container (microscopes, X-ray, most scientific cameras) uses only values up
  to 4095, so dropping the low 8 bits (`shift`) leaves 16 grey levels, an almost black image.
  Stretching each image between its own percentiles gives 256 levels across the range the
  image actually uses, ignores a few hot or dead pixels (0.1% of pixels at each end), and needs
  nothing but the image itself, so a new image at prediction time is read like the training
  images with no dataset statistics to carry along. The cost: absolute brightness is lost
  (each image is normalised on its own), and 8 bits after the stretch keep 256 of the image's
  levels (a 12-bit image's 1200 used levels merge ~5 to 1), which is below the noise of most
  sensors. 0.1% rather than 0.5% at each end: a few small bright objects in a large field
  (nuclei, spots, defects) can be under 0.5% of the pixels and would be saturated, while hot
  pixels are far rarer than 0.1%; it is also the stretch BBBC039's 8-bit copy was made with.
- `{percentile: [low, high]}` (or `percentile` for [0.1, 99.9]): that stretch for every image,
  8-bit ones included (e.g. low-contrast 8-bit micrographs).
- `{range: [low, high]}`: one fixed window for every image, e.g. `[0, 4095]` for 12-bit data
  where absolute brightness matters (dose, density); values outside are clipped.
- `shift`: the top 8 bits of a 16-bit image (`value >> 8`), which is how seglab read 16-bit
  images before this option existed; checkpoints written then carry no rule and read as
  `shift`, so they predict as they were trained.

Images that are neither 8- nor 16-bit unsigned integers (32-bit float or integer, signed TIFFs)
are refused with a DatasetError naming the file: no mapping of them is safe to guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seglab.data.errors import DatasetError
from seglab.errors import ConfigError

RULES = ("auto", "percentile", "range", "shift")
DEFAULT_PERCENTILES = (0.1, 99.9)
LEGACY = "shift"  # checkpoints and ONNX models written before the rule was stored
SUPPORTED_DTYPES = (np.uint8, np.uint16)
FORMS = "auto | shift | percentile | {percentile: [low, high]} | {range: [low, high]}"


@dataclass(frozen=True)
class Intensity:
    """A parsed `data.intensity` rule; `apply` maps a decoded image to uint8."""

    rule: str = "auto"
    low: float | None = None  # percentile or value, by rule
    high: float | None = None

    @classmethod
    def parse(cls, value: Any, key: str = "data.intensity") -> Intensity:
        """A config or checkpoint value (see the module docstring) -> the rule, or ConfigError
        naming `key`, what was found and the accepted forms."""
        if isinstance(value, Intensity):
            return value
        if value in ("auto", "shift"):
            return cls(value)
        if value == "percentile":
            return cls("percentile", *DEFAULT_PERCENTILES)
        if isinstance(value, Mapping) and len(value) == 1:
            ((rule, bounds),) = value.items()
            if rule in ("percentile", "range"):
                limit = 100.0 if rule == "percentile" else None
                low, high = _bounds(bounds, f"{key}.{rule}", limit)
                return cls(rule, low, high)
        raise ConfigError(
            f"{key}={value!r:.80}: expected one of {FORMS}, e.g. {key}={{range:[0,4095]}} for "
            "12-bit data with a fixed window"
        )

    def to_config(self) -> str | dict[str, list[float]]:
        """The plain form a checkpoint stores and `parse` reads back."""
        if self.rule in ("auto", "shift"):
            return self.rule
        return {self.rule: [self.low, self.high]}

    def apply(self, image: np.ndarray, name: str | Path, per_band: bool = False) -> np.ndarray:
        """A decoded uint8 or uint16 image -> uint8 by this rule; other dtypes are refused.
        A grayscale file (which OpenCV repeats to 3 equal channels) is mapped on one channel,
        by its own percentiles, and repeated again: 3x less work, and the statistics of the
        file's values.

        `per_band` (multi-band TIFFs, `seglab.data.channels`): the percentile rules stretch
        each band between its own percentiles. The bands of such files are separate
        measurements (stains, spectral bands) whose ranges differ by orders of magnitude; one
        stretch over all of them would leave the dim ones a few grey levels. A colour photo's
        3 channels are stretched together instead, which keeps its colours. `range` and `shift`
        are one fixed mapping either way."""
        if image.dtype not in SUPPORTED_DTYPES:
            raise unsupported_depth(name, f"{image.dtype} values")
        if self.rule == "auto" and image.dtype == np.uint8:
            return image
        if self.rule == "shift":
            return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
        if per_band and image.ndim == 3 and self.rule != "range":
            bands = [self._map(np.ascontiguousarray(image[..., c])) for c in range(image.shape[2])]
            return np.stack(bands, axis=2)
        if image.ndim == 3 and all(
            np.array_equal(image[..., 0], image[..., c]) for c in range(1, image.shape[2])
        ):
            mapped = self._map(np.ascontiguousarray(image[..., 0]))
            if image.shape[2] == 3:
                return cv2.cvtColor(mapped, cv2.COLOR_GRAY2BGR)
            return np.repeat(mapped[..., None], image.shape[2], axis=2)
        return self._map(image)

    def _map(self, image: np.ndarray) -> np.ndarray:
        if self.rule == "range":
            return stretch(image, self.low, self.high)
        qs = DEFAULT_PERCENTILES if self.rule == "auto" else (self.low, self.high)
        return stretch(image, *percentiles(image, qs))

    def describe(self) -> str:
        if self.rule in ("auto", "shift"):
            return self.rule
        return f"{self.rule} [{self.low:g}, {self.high:g}]"


def _bounds(value: Any, key: str, limit: float | None) -> tuple[float, float]:
    numbers = (
        [float(v) for v in value]
        if isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        else []
    )
    if (
        len(numbers) != 2
        or not all(np.isfinite(numbers))
        or numbers[0] < 0
        or numbers[0] >= numbers[1]
        or (limit is not None and numbers[1] > limit)
    ):
        within = f" within [0, {limit:g}]" if limit is not None else ", 0 or more"
        raise ConfigError(
            f"{key}={value!r:.80}: expected [low, high] with low < high{within}, "
            "e.g. [0.1, 99.9] for percentiles or [0, 4095] for 12-bit values"
        )
    return numbers[0], numbers[1]


def percentiles(image: np.ndarray, qs: Sequence[float]) -> tuple[float, float]:
    """The image's `qs` percentiles over all pixels and channels, equal to `np.percentile`'s
    (linear interpolation) but from a histogram of the bounded integer values: 3 ms instead of
    15 for a 696x520 16-bit image."""
    return histogram_percentiles(np.bincount(image.ravel(), minlength=1), qs)


def histogram_percentiles(counts: np.ndarray, qs: Sequence[float]) -> tuple[float, float]:
    """`percentiles` from a histogram of values (`counts[v]`: how many pixels hold v): how a
    windowed reader (`seglab.data.tiff_windows`) gets a whole image's percentiles from its
    tiles, one at a time, without holding the image."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    values = []
    for q in qs:
        position = float(q) / 100.0 * (n - 1)
        below = int(np.floor(position))
        at = np.searchsorted(cumulative, [below, min(below + 1, n - 1)], side="right")
        values.append(float(at[0]) + (position - below) * float(at[1] - at[0]))
    return values[0], values[1]


def stretch(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """`round(255 * clip((v - low) / (high - low), 0, 1))` as uint8; an image with no spread
    (high <= low, e.g. a blank frame) maps to 0. Computed once per possible value (a table of
    65536 for 16-bit images) and looked up: 10x faster than computing it per pixel."""
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    values = np.arange(np.iinfo(image.dtype).max + 1, dtype=np.float32)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    table = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return table[image]


def unsupported_depth(name: str | Path, found: str) -> DatasetError:
    """The error for an image whose depth seglab cannot map to 8 bits (the reader and the
    scan say the same)."""
    return DatasetError(
        f"{name}: image of {found}; seglab reads 8- and 16-bit unsigned integer images "
        "(PNG, TIFF, JPEG, BMP). Save it as a 16-bit unsigned TIFF or PNG (scaled to 0-65535 "
        "if it holds floats or signed values), then set data.intensity to map it"
    )
