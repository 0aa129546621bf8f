"""The Predictor: uint8 images (RGB, or the model's `in_channels`) of any size -> logits, class
masks or probabilities at each image's own size, with the preprocessing the network was
trained with (`seglab.preprocessing`).

The network is any callable from a normalised (N, C, H, W) float tensor to (N, C, H, W) logits,
so a checkpoint (torch) and an ONNX model (onnxruntime) share every step around it. The
Predictor alone decides what the network sees of an image (mode, size, scales); a loader that
wants that work done in its worker processes calls `predictor.preparer`, a picklable function
from an image to a `Prepared` one, and hands the results back to `logits`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seglab.data.masks import index_dtype
from seglab.errors import ConfigError
from seglab.prediction.geometry import (
    pad_to,
    resize_logits,
    round_to_multiple,
    round_up,
    scale_image,
    tile_starts,
    tile_window,
)
from seglab.prediction.info import ModelInfo
from seglab.prediction.strips import SlideAccumulator
from seglab.preprocessing import (
    class_map,
    fit_size,
    images_to_batch,
    letterbox,
    max_fit_ratio,
    normalise,
    pixel_statistics,
    restore_logits,
)

Network = Callable[[torch.Tensor], torch.Tensor]
MODES = ("resize", "whole", "slide")
AUTO_MODE = "auto"  # `slide` for models trained with data.sampling=tile, else `resize`
GPU_BATCH = 8  # `batch_size: auto` on a GPU; a CPU takes one image or tile per forward pass


def resolve_batch_size(batch_size: int | str, device: torch.device) -> int:
    """Images (or slide tiles) per forward pass. `auto` is 1 on a CPU, where a larger batch
    only makes the convolutions' working set outgrow the caches (U-Net ResNet-34, 512 px, 2
    cores: 3.4 images/s at batch 1, 2.7 at batch 8) and adds its activations to the peak
    memory, and `GPU_BATCH` on a GPU, which needs batches to be busy."""
    if batch_size == "auto":
        return 1 if device.type == "cpu" else GPU_BATCH
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: give auto or a whole number of at least 1")
    return batch_size


@dataclass(frozen=True)
class Prepared:
    """An image and, in `resize` mode, its network input made ahead of time (None otherwise)."""

    image: np.ndarray
    network_input: np.ndarray | None = None


@dataclass(frozen=True)
class InputPreparer:
    """What a loader worker may compute for the Predictor: the resized network input of
    `resize` mode. Small and picklable (no network), unlike the Predictor."""

    input_size: tuple[int, int] | None
    channels: int = 3  # the model's in_channels
    max_ratio: float | None = None  # `fit_size`'s, from the model's data.upscale

    def __call__(self, image: np.ndarray) -> Prepared:
        check_image(image, self.channels)
        if self.input_size is None:
            return Prepared(image)
        return Prepared(image, letterbox(image, self.input_size, self.max_ratio))


class Predictor:
    """Turns RGB uint8 images of any size into logits and class masks at their own size.

    - `resize`: the image fitted into the training size with its aspect kept, as validation
      does; the logits back at its own size (fast);
    - `whole`: the image at its own size, padded to a multiple of 32 (detail of large images);
    - `slide`: tiles of the training size overlapping by `overlap`, logits blended with weights
      that fall off towards each tile's border (large images, the scale the network learned;
      how validation evaluates models trained with `data.sampling=tile`);
      `slide_strips` gives one image's slide logits strip by strip, in memory bounded by a
      tile's height, for images whose whole-image logits would not fit;
    - `auto` (the default): `slide` for a model trained with `data.sampling=tile`
      (`info.sampling`), else `resize`: the mode its validation scores measured.
    `flip` adds horizontally flipped inputs and `scales` resized ones; all are averaged as logits.
    """

    def __init__(
        self,
        network: Network,
        info: ModelInfo,
        device: torch.device,
        mode: str = AUTO_MODE,
        overlap: float = 0.25,
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        batch_size: int | str = "auto",
        autocast_dtype: torch.dtype | None = None,
    ):
        if mode == AUTO_MODE:
            mode = "slide" if info.sampling == "tile" else "resize"
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}: choose one of {[AUTO_MODE, *MODES]}")
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"overlap={overlap}: give a fraction of the tile in [0, 1)")
        if not scales or any(s <= 0 for s in scales):
            raise ConfigError(
                f"tta.scales={list(scales)}: give positive factors, e.g. [0.75,1,1.25]"
            )
        batch_size = resolve_batch_size(batch_size, device)
        self.network, self.info, self.device = network, info, device
        self.mode, self.overlap, self.flip = mode, overlap, flip
        self.scales = tuple(float(s) for s in scales)
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self._mean, self._std = pixel_statistics(info.mean, info.std, device)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def input_size(self, scale: float = 1.0) -> tuple[int, int]:
        """What `resize` mode feeds the network: the training size times `scale`."""
        height, width = self.info.image_size
        return round_to_multiple(height * scale), round_to_multiple(width * scale)

    @property
    def preparer(self) -> InputPreparer:
        """The per-image work a loader may do in its workers (see `Prepared`)."""
        size = self.input_size(self.scales[0]) if self.mode == "resize" else None
        return InputPreparer(size, self.info.in_channels, self._max_ratio(self.scales[0]))

    def _max_ratio(self, scale: float) -> float | None:
        """How much `resize` mode may enlarge an image at a test-time `scale`: as in training
        (`data.upscale`), times the scale."""
        return max_fit_ratio(self.info.upscale, scale)

    @torch.inference_mode()
    def logits(self, images: Sequence[np.ndarray | Prepared]) -> list[torch.Tensor]:
        """Float32 logits (C, H, W) per image, at each image's own size, on `self.device`."""
        items = [item if isinstance(item, Prepared) else self.preparer(item) for item in images]
        if not items:
            return []
        if self.mode == "resize":
            return self._resize_mode(items)
        originals = [item.image for item in items]
        run = self._whole if self.mode == "whole" else self._slide
        totals: list[torch.Tensor | None] = [None] * len(items)
        for scale in self.scales:
            scaled = [scale_image(image, scale) for image in originals]
            for i, (image, logits) in enumerate(zip(originals, run(scaled), strict=True)):
                logits = resize_logits(logits[None], image.shape[:2])[0]
                totals[i] = logits if totals[i] is None else totals[i] + logits
        return [total / len(self.scales) for total in totals]

    def probabilities(self, images: Sequence[np.ndarray | Prepared]) -> list[torch.Tensor]:
        """Per-class softmax probabilities (C, H, W), float32, per image."""
        return [to_probabilities(logits) for logits in self.logits(images)]

    def labels(self, images: Sequence[np.ndarray | Prepared]) -> list[np.ndarray]:
        """Class-index masks (H, W) per image (uint8; uint16 past 255 classes)."""
        return [to_labels(logits, self.num_classes) for logits in self.logits(images)]

    def predict(self, image: np.ndarray | Prepared) -> np.ndarray:
        """One RGB uint8 image of any size -> its class-index mask of the same size."""
        (labels,) = self.labels([image])
        return labels

    def _resize_mode(self, items: Sequence[Prepared]) -> list[torch.Tensor]:
        """Each image fitted into the training size (times each TTA scale) with its aspect kept,
        exactly as validation does; the fitted region's logits back at the image's size."""
        totals: list[torch.Tensor | None] = [None] * len(items)
        for scale in self.scales:
            size, max_ratio = self.input_size(scale), self._max_ratio(scale)
            batch = [self._network_input(item, size, max_ratio) for item in items]
            logits = self._run(self._normalise(batch))
            for i, item in enumerate(items):
                shape = item.image.shape[:2]
                restored = restore_logits(logits[i], fit_size(shape, size, max_ratio), shape)
                totals[i] = restored if totals[i] is None else totals[i] + restored
        return [total / len(self.scales) for total in totals]

    @staticmethod
    def _network_input(
        item: Prepared, size: tuple[int, int], max_ratio: float | None
    ) -> np.ndarray:
        """The input a loader prepared, when it is of this size, else the letterbox done here."""
        prepared = item.network_input
        if prepared is not None and prepared.shape[:2] == size:
            return prepared
        return letterbox(item.image, size, max_ratio)

    def _whole(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Each image at its own size; images of the same size share forward passes."""
        out: list[torch.Tensor | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_shape[image.shape].append(i)
        for indices in by_shape.values():
            logits = self._run(self._normalise([images[i] for i in indices]))
            for i, image_logits in zip(indices, logits, strict=True):
                out[i] = image_logits
        return out

    @torch.inference_mode()
    def slide_strips(self, image: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
        """`slide` logits of one image as (top, (C, rows, width) float32) strips, top to bottom,
        in memory bounded by a tile's height (`strips.SlideAccumulator`): how predict.py predicts
        images too large for whole-image logits. The strips are exactly `logits([image])` in
        slide mode; TTA scales would need whole-image logits to resize, so they are refused.
        The image rows above a strip are never read again once it is yielded."""
        check_image(image)
        if self.scales != (1.0,):
            raise ConfigError(
                f"tta.scales={list(self.scales)}: strip-by-strip slide prediction takes the image "
                "at its own scale only; give tta.scales=[1.0]"
            )
        for _, strip in self._slide_tiles([image]):
            yield strip

    def _slide(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Blend the logits of overlapping training-size tiles; an image smaller than a tile is
        padded up to it. Tiles of all the images fill the forward passes together."""
        strips: list[list[torch.Tensor]] = [[] for _ in images]
        for i, (_, logits) in self._slide_tiles(images):
            strips[i].append(logits)
        return [torch.cat(parts, dim=1) for parts in strips]

    def _slide_tiles(
        self, images: Sequence[np.ndarray]
    ) -> Iterator[tuple[int, tuple[int, torch.Tensor]]]:
        """(image index, (top, logits strip)) as the strips of each image become final: tiles
        of all the images in `tile_starts` order, `batch_size` to a forward pass, blended by one
        `SlideAccumulator` per image."""
        tile_h, tile_w = self.info.image_size
        window = tile_window(tile_h, tile_w, self.overlap, self.device)
        tiles = [  # (image, top, left) of every tile, row of tiles by row of tiles
            (i, top, left)
            for i, image in enumerate(images)
            for top in tile_starts(image.shape[0], tile_h, self.overlap)
            for left in tile_starts(image.shape[1], tile_w, self.overlap)
        ]
        blends = [SlideAccumulator(im.shape[0], im.shape[1], window) for im in images]
        for start in range(0, len(tiles), self.batch_size):
            chunk = tiles[start : start + self.batch_size]
            batch = torch.cat(
                [
                    pad_to(
                        self._normalise([images[i][t : t + tile_h, le : le + tile_w]]),
                        tile_h,
                        tile_w,
                    )
                    for i, t, le in chunk
                ]
            )
            for (i, top, left), logits in zip(chunk, self._run(batch), strict=True):
                for strip in blends[i].advance(top):
                    yield i, strip
                blends[i].add(top, left, logits)
        for i, blend in enumerate(blends):
            for strip in blend.finish():
                yield i, strip

    def _normalise(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size uint8 HWC RGB images -> the normalised float batch training sees."""
        return normalise(images_to_batch(images, self.device), self._mean, self._std)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Network logits in float32, in chunks of `batch_size`, padded to a multiple of 32 and
        cropped back; with `flip`, averaged with the un-flipped logits of the mirrored input."""
        height, width = x.shape[-2:]
        x = pad_to(x, round_up(height), round_up(width))
        chunks = []
        for chunk in x.split(self.batch_size):
            logits = self._forward(chunk)
            if self.flip:
                logits = (logits + self._forward(chunk.flip(-1)).flip(-1)) / 2
            chunks.append(logits)
        logits = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        return logits[..., :height, :width]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        enabled = self.autocast_dtype is not None
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled):
            return self.network(x).float()


def check_image(image: np.ndarray, channels: int = 3) -> None:
    """The Predictor's input contract, checked before any work: uint8 (H, W, channels), the
    model's `in_channels` (RGB for 3)."""
    valid = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
    if not valid or image.shape[2] != channels:
        found = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        kind = "RGB uint8" if channels == 3 else "uint8"
        raise ConfigError(
            f"the Predictor takes {kind} images of shape (height, width, {channels}) (the "
            f"model's in_channels), got a {found}; read files with "
            f"seglab.data.dataset.read_image(path, info.reader, info.in_channels)"
        )


def to_labels(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, H, W) logits -> (H, W) class indices, uint8 (uint16 past 255 classes)."""
    return class_map(logits).cpu().numpy().astype(index_dtype(num_classes))


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(C, H, W) logits -> per-class softmax probabilities, float32, on the logits' device."""
    return torch.softmax(logits.float(), dim=0)
