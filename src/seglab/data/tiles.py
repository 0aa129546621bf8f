"""`data.sampling=tile`: training on windows of large images at their native resolution, and
evaluating them by sliding windows.

`data.sampling=resize` (the default) fits every image into `data.image_size`, which shrinks a
large image and its small objects. With `tile`, `data.image_size` is the *window*: each
training sample is a window of that size cut from an image at its own resolution (no resize,
no scale jitter), and validation and testing run predict.py's `mode=slide` over each whole
image (`SlideEvalTransform`, `SlideCollate`; the module blends the windows with the
Predictor's one slide algorithm and counts the metrics at the image's own size).

- Windows per image and epoch: `ceil(image area / window area)`, at least 1, so an epoch sees
  about every pixel once, as many windows as the image holds (`windows_per_image`).
- Where: uniform over the positions that keep the window inside the image; with probability
  `data.rare_class_windows`, centred instead (clipped to the image) on a pixel of a class of
  the image, drawn with weights inverse to the class's pixel frequency in the train split.
- Images smaller than the window on a side are padded at the bottom and right (where slide
  evaluation pads them too): image pixels 0, mask pixels `ignore_index` (not counted).
- Reading: tiled TIFFs a window at a time (`seglab.data.tiff_windows`); any other image is
  decoded whole. Decoded images and masks are kept in a per-worker least-recently-used cache
  of at most `data.tile_cache_mb` megabytes (`ByteCache`), so an image is decoded once for
  its many windows while it stays cached; an image larger than the whole cache is decoded
  for each window.
- Randomness comes from a generator seeded per loader worker like the augmentation pipeline
  (`seglab.data.seeding`), so a run repeats from its `seed`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.dataset import SegmentationDataset, read_image
from seglab.data.seeding import seed_augmentation
from seglab.data.tiff_windows import TiledTiff, WindowReader
from seglab.data.transforms import build_window_transform, pad_masks
from seglab.errors import ConfigError

SAMPLINGS = ("resize", "tile")
POSITIONS_PER_CLASS = 4096  # pixel positions kept per class and image for rare-class windows


@dataclass(frozen=True)
class TileOptions:
    """The checked `data.sampling`, `data.rare_class_windows` and `data.tile_cache_mb`."""

    sampling: str = "resize"
    rare_class_windows: float = 0.0
    tile_cache_mb: float = 512.0

    @classmethod
    def parse(cls, sampling: Any, rare_class_windows: Any, tile_cache_mb: Any) -> TileOptions:
        if sampling not in SAMPLINGS:
            raise ConfigError(
                f"data.sampling={sampling!r}: choose resize (each image fitted into "
                "data.image_size) or tile (windows of data.image_size at native resolution)"
            )
        number = (int, float)
        rare = rare_class_windows
        if isinstance(rare, bool) or not isinstance(rare, number) or not 0 <= rare <= 1:
            raise ConfigError(
                f"data.rare_class_windows={rare!r}: give the share of windows centred on a rare "
                "class, a number in [0, 1] (0 = uniform windows), e.g. 0.5"
            )
        cache = tile_cache_mb
        if isinstance(cache, bool) or not isinstance(cache, number) or not cache >= 0:
            raise ConfigError(
                f"data.tile_cache_mb={cache!r}: give the decoded-image cache per loader worker "
                "in megabytes, 0 or more (0 = decode an image for each window), e.g. 512"
            )
        return cls(sampling, float(rare), float(cache))

    @property
    def tiled(self) -> bool:
        return self.sampling == "tile"


def tile_window(crop_size: Any, image_size: tuple[int, int]) -> tuple[int, int]:
    """The training window with `data.sampling=tile`: `data.image_size`. `data.crop_size`
    `auto` or `null` are it; another crop would be a second window size, so it is refused."""
    if crop_size not in ("auto", None) and tuple(int(v) for v in crop_size) != image_size:
        raise ConfigError(
            f"data.crop_size={list(crop_size)} with data.sampling=tile: the training window is "
            f"data.image_size={list(image_size)}; set data.image_size={list(crop_size)} and "
            "data.crop_size=auto instead"
        )
    return image_size


def tile_transform(
    train: bool, augmentation: Sequence[dict[str, Any]], channels: int
) -> Callable[..., dict]:
    """Train: the configured augmentations on each window (no geometry); eval: the whole image."""
    return build_window_transform(augmentation, channels) if train else SlideEvalTransform()


def windows_per_image(size: Sequence[int], window: Sequence[int]) -> int:
    """`ceil(image area / window area)`, at least 1: an epoch covers about each pixel once."""
    return max(1, math.ceil(int(size[0]) * int(size[1]) / (int(window[0]) * int(window[1]))))


def rare_class_weights(pixel_counts: Sequence[int]) -> np.ndarray:
    """Per class, the inverse of its share of the train split's pixels (0 for absent ones)."""
    counts = np.asarray(pixel_counts, np.float64)
    total = counts.sum()
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0)


class ByteCache:
    """A least-recently-used cache bounded by the bytes of its values (`nbytes(value)`)."""

    def __init__(self, max_bytes: int, nbytes: Callable[[Any], int]):
        self.max_bytes, self.nbytes = int(max_bytes), nbytes
        self.bytes = 0
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The cached value of `key`, else `make()`'s, kept while the bound allows."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        size = self.nbytes(value)
        if size > self.max_bytes:
            return value  # larger than the whole cache: used once, never cached
        while self.bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= self.nbytes(old)
        self._items[key] = value
        self.bytes += size
        return value


@dataclass
class Source:
    """One training image as its windows need it: the mask, the image (decoded whole) or its
    window reader (tiled TIFFs), and per class a sample of its pixel positions (flat indices)
    for rare-class windows."""

    mask: np.ndarray
    image: np.ndarray | None
    reader: WindowReader | None
    positions: dict[int, np.ndarray]

    @property
    def size(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]

    @property
    def nbytes(self) -> int:
        arrays = [self.mask, *self.positions.values()]
        return sum(a.nbytes for a in arrays) + (0 if self.image is None else self.image.nbytes)

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        if self.reader is not None:
            return self.reader.read(top, left, height, width)
        assert self.image is not None
        return self.image[top : top + height, left : left + width]


class TileDataset(Dataset):
    """Random windows of `window` (height, width) at native resolution from `base`'s images
    (whose `transform` must leave the geometry alone: `build_window_transform`); see the
    module docstring. `sizes`: each image's (height, width), from the scan."""

    def __init__(
        self,
        base: SegmentationDataset,
        sizes: Sequence[Sequence[int]],
        window: Sequence[int],
        ignore_index: int,
        options: TileOptions,
        class_pixels: Sequence[int] | None = None,
    ):
        if len(sizes) != len(base):
            raise ValueError(f"{len(sizes)} image sizes for {len(base)} images")
        self.base, self.transform = base, base.transform
        self.window = (int(window[0]), int(window[1]))
        self.ignore_index, self.rare = ignore_index, options.rare_class_windows
        self.class_weights = rare_class_weights([] if class_pixels is None else class_pixels)
        self.image_of = np.repeat(
            np.arange(len(base)), [windows_per_image(s, self.window) for s in sizes]
        )
        self.cache = ByteCache(int(options.tile_cache_mb * 2**20), lambda s: s.nbytes)
        self.rng = np.random.default_rng(0)

    def set_random_seed(self, seed: int) -> None:
        """Seed the window positions and the augmentation (`seglab.data.seeding`)."""
        self.rng = np.random.default_rng(int(seed) % 2**32)
        seed_augmentation(self.transform, seed)

    def __len__(self) -> int:
        return len(self.image_of)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(self.image_of[k])
        source = self.cache.get(i, lambda: self.load(i))
        top, left = self.place(source)
        height = min(self.window[0], source.size[0] - top)
        width = min(self.window[1], source.size[1] - left)
        image = source.read(top, left, height, width)
        mask = source.mask[top : top + height, left : left + width]
        image, mask = pad_window(image, mask, self.window, self.ignore_index)
        return {**self.transform(image=image, mask=mask), "index": torch.tensor(i)}

    def load(self, i: int) -> Source:
        """Image `i` decoded whole, or opened for windows when it is a tiled TIFF."""
        base = self.base
        path = base.samples[i].image
        tiled = TiledTiff.probe(path)
        if tiled is not None:
            reader = WindowReader(tiled, base.intensity, base.channels)
            image, size = None, reader.shape
        else:
            reader = None
            image = read_image(path, base.intensity, base.channels)
            size = image.shape[:2]
        mask = base.load_mask(i, size)
        return Source(mask, image, reader, class_positions(mask) if self.rare > 0 else {})

    def place(self, source: Source) -> tuple[int, int]:
        """The window's top-left corner: uniform, or centred on a rare class's pixel."""
        (height, width), (win_h, win_w) = source.size, self.window
        last_top, last_left = max(0, height - win_h), max(0, width - win_w)
        if self.rare > 0 and self.rng.random() < self.rare:
            present = [c for c in source.positions if c < len(self.class_weights)]
            weights = self.class_weights[present] if present else np.zeros(0)
            if weights.sum() > 0:
                c = present[int(self.rng.choice(len(present), p=weights / weights.sum()))]
                pixels = source.positions[c]
                y, x = divmod(int(pixels[self.rng.integers(len(pixels))]), width)
                top = min(max(0, y - win_h // 2), last_top)
                return top, min(max(0, x - win_w // 2), last_left)
        return int(self.rng.integers(last_top + 1)), int(self.rng.integers(last_left + 1))


def class_positions(mask: np.ndarray) -> dict[int, np.ndarray]:
    """Per class present in `mask`, up to POSITIONS_PER_CLASS of its pixels' flat indices,
    evenly spread over them (ignored pixels have no class: the caller skips their value)."""
    flat = mask.ravel()
    positions = {}
    for c in np.flatnonzero(np.bincount(flat)).tolist():  # O(pixels), unlike np.unique's sort
        where = np.flatnonzero(flat == c)
        step = max(1, len(where) // POSITIONS_PER_CLASS)
        positions[int(c)] = where[::step][:POSITIONS_PER_CLASS].astype(np.int64)
    return positions


def pad_window(
    image: np.ndarray, mask: np.ndarray, window: Sequence[int], ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """A window cut from an image smaller than `window`, padded at the bottom and right:
    image pixels 0, mask pixels `ignore_index`."""
    height, width = (int(v) for v in window)
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)
    padded = np.zeros((height, width, image.shape[2]), image.dtype)
    padded[: image.shape[0], : image.shape[1]] = image
    padded_mask = np.full((height, width), ignore_index, mask.dtype)
    padded_mask[: mask.shape[0], : mask.shape[1]] = mask
    return padded, padded_mask


@dataclass(frozen=True)
class SlideEvalTransform:
    """An image as `tile` evaluation sees it: whole, at its own resolution (the module slides
    the training window over it, as predict.py's `mode=slide` does), with its mask."""

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        return {
            "image": np.ascontiguousarray(image),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "size": torch.tensor(image.shape[:2]),
        }


@dataclass(frozen=True)
class SlideCollate:
    """Batch `SlideEvalTransform` samples: images of their own sizes as a list under `images`
    (uint8 HWC arrays, as the Predictor takes them), masks padded with `ignore_index`."""

    ignore_index: int

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = {
            "images": [s["image"] for s in samples],
            "mask": pad_masks([s["mask"] for s in samples], self.ignore_index),
            "size": torch.stack([s["size"] for s in samples]),
        }
        if "index" in samples[0]:
            batch["index"] = torch.stack([s["index"] for s in samples])
        return batch
