"""Class masks for images of any size: the preprocessing the network was trained with, then
resize, whole-image or sliding-window inference, with flip / multi-scale test-time augmentation.

The network is any callable from a normalised (N, 3, H, W) float tensor to (N, C, H, W) logits,
so a checkpoint (torch) and an exported ONNX model (onnxruntime) share every step around it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import seglab
from seglab.data.cvat import SegClass
from seglab.data.masks import index_dtype

Network = Callable[[torch.Tensor], torch.Tensor]
MODES = ("resize", "whole", "slide")
SIZE_MULTIPLE = 32  # smp encoders downsample 5 times: inputs are padded to a multiple of this
REQUIRED_METADATA = ("model", "loss", "optimizer", "classes", "image_size", "mean", "std")


@dataclass(frozen=True)
class ModelInfo:
    """Everything prediction needs besides the weights; a checkpoint's hyper-parameters and an
    ONNX model's metadata both carry it."""

    classes: list[dict[str, Any]]  # {"name", "color"} in class-index order
    image_size: tuple[int, int]  # the training input size, [height, width]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int = 255
    seglab_version: str = "unknown"
    arch: str = "unknown"

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [tuple(c["color"]) for c in self.classes]

    @property
    def seg_classes(self) -> list[SegClass]:
        return [SegClass(c["name"], tuple(c["color"])) for c in self.classes]

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> ModelInfo:
        return cls(
            classes=[{"name": c["name"], "color": list(c["color"])} for c in hparams["classes"]],
            image_size=tuple(int(v) for v in hparams["image_size"]),
            mean=tuple(float(v) for v in hparams["mean"]),
            std=tuple(float(v) for v in hparams["std"]),
            ignore_index=int(hparams.get("ignore_index", 255)),
            seglab_version=str(hparams.get("seglab_version", "unknown")),
            arch=str(hparams["model"].get("arch", "unknown")),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        data["image_size"] = tuple(data["image_size"])
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


class Predictor:
    """Turns RGB uint8 images of any size into logits and class masks at their own size.

    - `resize`: the image is resized to the training size, the logits back (fast, the default);
    - `whole`: the image at its own size, padded to a multiple of 32 (detail of large images);
    - `slide`: tiles of the training size overlapping by `overlap`, logits blended with weights
      that fall off towards each tile's border (large images, the scale the network learned).
    `flip` adds horizontally flipped inputs and `scales` resized ones; all are averaged as logits.
    """

    def __init__(
        self,
        network: Network,
        info: ModelInfo,
        device: torch.device,
        mode: str = "resize",
        overlap: float = 0.25,
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        batch_size: int = 8,
        autocast_dtype: torch.dtype | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose one of {list(MODES)}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap={overlap}: give a fraction of the tile in [0, 1)")
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(
                f"tta.scales={list(scales)}: give positive factors, e.g. [0.75,1,1.25]"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: give at least 1")
        self.network, self.info, self.device = network, info, device
        self.mode, self.overlap, self.flip = mode, overlap, flip
        self.scales = tuple(float(s) for s in scales)
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self._mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1) * 255
        self._std = torch.tensor(info.std, device=device).view(1, -1, 1, 1) * 255

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def resize_input(self, image: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """What `resize` mode feeds the network: the training size times `scale`."""
        return resize_image(image, [_round_to_multiple(v * scale) for v in self.info.image_size])

    @torch.inference_mode()
    def logits(
        self, images: Sequence[np.ndarray], resized: Sequence[np.ndarray] | None = None
    ) -> list[torch.Tensor]:
        """Float32 logits (C, H, W) per image, at each image's own size, on `self.device`.

        `resized` may hold `resize_input(image)` of each image, computed in loader workers.
        """
        if self.mode == "resize":
            return self._resize_mode(images, resized)
        run = self._whole if self.mode == "whole" else self._slide
        totals: list[torch.Tensor | None] = [None] * len(images)
        for scale in self.scales:
            scaled = [_scale_image(image, scale) for image in images]
            for i, (image, logits) in enumerate(zip(images, run(scaled), strict=True)):
                logits = _resize_logits(logits[None], image.shape[:2])[0]
                totals[i] = logits if totals[i] is None else totals[i] + logits
        return [total / len(self.scales) for total in totals]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 image of any size -> class-index mask of the same size."""
        (logits,) = self.logits([image])
        return to_labels(logits, self.num_classes)

    def _resize_mode(
        self, images: Sequence[np.ndarray], resized: Sequence[np.ndarray] | None
    ) -> list[torch.Tensor]:
        total = None
        for scale in self.scales:
            if scale == 1.0 and resized is not None:
                batch = resized
            else:
                batch = [self.resize_input(image, scale) for image in images]
            logits = _resize_logits(self._run(self._normalise(batch)), self.info.image_size)
            total = logits if total is None else total + logits
        total = total / len(self.scales)
        return [
            _resize_logits(total[i : i + 1], image.shape[:2])[0] for i, image in enumerate(images)
        ]

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

    def _slide(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Blend the logits of overlapping training-size tiles; an image smaller than a tile is
        padded up to it. Tiles of all the images fill the forward passes together."""
        tile_h, tile_w = self.info.image_size
        window = self._window(tile_h, tile_w)
        tiles = [  # (image, top, left) of every tile
            (i, top, left)
            for i, image in enumerate(images)
            for top in _tile_starts(image.shape[0], tile_h, self.overlap)
            for left in _tile_starts(image.shape[1], tile_w, self.overlap)
        ]
        sums: list[torch.Tensor | None] = [None] * len(images)
        weights = [
            torch.zeros((1, max(im.shape[0], tile_h), max(im.shape[1], tile_w)), device=self.device)
            for im in images
        ]
        for start in range(0, len(tiles), self.batch_size):
            chunk = tiles[start : start + self.batch_size]
            batch = torch.cat(
                [
                    _pad_to(
                        self._normalise([images[i][t : t + tile_h, le : le + tile_w]]),
                        tile_h,
                        tile_w,
                    )
                    for i, t, le in chunk
                ]
            )
            for (i, top, left), logits in zip(chunk, self._run(batch), strict=True):
                if sums[i] is None:
                    sums[i] = logits.new_zeros((logits.shape[0], *weights[i].shape[1:]))
                sums[i][:, top : top + tile_h, left : left + tile_w] += logits * window
                weights[i][:, top : top + tile_h, left : left + tile_w] += window
        return [
            (total / weight)[:, : image.shape[0], : image.shape[1]]
            for total, weight, image in zip(sums, weights, images, strict=True)
        ]

    def _window(self, tile_h: int, tile_w: int) -> torch.Tensor:
        """Per-pixel tile weight: 1 inside, falling linearly to 1/ramp over the overlap at the
        border, so seams between tiles blend instead of jumping."""

        def ramp(length: int) -> torch.Tensor:
            width = max(1, length - _stride(length, self.overlap))
            i = torch.arange(length, dtype=torch.float32, device=self.device)
            return torch.minimum((i + 1) / width, (length - i) / width).clamp(max=1.0)

        return ramp(tile_h)[:, None] * ramp(tile_w)[None, :]

    def _normalise(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Stacked uint8 HWC RGB -> normalised float NCHW, as the training transform does."""
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
        return (batch.permute(0, 3, 1, 2).float() - self._mean) / self._std

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Network logits in float32, in chunks of `batch_size`, padded to a multiple of 32 and
        cropped back; with `flip`, averaged with the un-flipped logits of the mirrored input."""
        height, width = x.shape[-2:]
        x = _pad_to(x, _round_up(height), _round_up(width))
        chunks = []
        for chunk in x.split(self.batch_size):
            logits = self._forward(chunk)
            if self.flip:
                logits = (logits + self._forward(chunk.flip(-1)).flip(-1)) / 2
            chunks.append(logits)
        return torch.cat(chunks)[..., :height, :width]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        enabled = self.autocast_dtype is not None
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled):
            return self.network(x).float()


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize to [height, width] as the validation transform does (bilinear)."""
    height, width = size
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def to_labels(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, H, W) logits -> (H, W) class indices, uint8 (uint16 past 255 classes)."""
    return logits.argmax(dim=0).cpu().numpy().astype(index_dtype(num_classes))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device}: no CUDA GPU is available here; use device=cpu")
    return torch.device(device)


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware has it (CPUs, Ampere and newer GPUs), else fp16; None = fp32."""
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def load_checkpoint(ckpt: str | Path, device: torch.device) -> tuple[torch.nn.Module, ModelInfo]:
    """The network in eval mode and its metadata, from the checkpoint alone (weights only)."""
    from seglab.models.module import SegmentationModule

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: no such checkpoint file")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{ckpt}: not a readable seglab checkpoint ({type(err).__name__}: {err}). Give a "
            ".ckpt file written by seglab's train.py (run_dir/checkpoints/)"
        ) from err
    hparams = dict(state.get("hyper_parameters") or {}) if isinstance(state, dict) else {}
    missing = [key for key in REQUIRED_METADATA if key not in hparams]
    if missing or "state_dict" not in state:
        raise ValueError(
            f"{ckpt}: checkpoint lacks seglab metadata {missing or ['state_dict']}; it was not "
            "written by seglab's train.py (or by an incompatible version). Predict with a "
            "checkpoint from run_dir/checkpoints/ of a seglab training run"
        )
    version = str(hparams.get("seglab_version", "unknown"))
    # The trained weights replace the encoder's (never download), and compiling only slows
    # down a prediction run's first images.
    hparams["model"] = {**hparams["model"], "encoder_weights": None, "compile": False}
    try:
        module = SegmentationModule(**hparams)
        module.load_state_dict(state["state_dict"])
    except Exception as err:
        raise ValueError(
            f"{ckpt}: written by seglab {version}, which this seglab {seglab.__version__} cannot "
            f"rebuild ({type(err).__name__}: {err}). Predict with the seglab version that trained "
            "it, or retrain"
        ) from err
    if version != seglab.__version__:
        print(
            f"[seglab] note: {ckpt.name} was written by seglab {version}; this is "
            f"{seglab.__version__}. It loaded; compare a few predictions if in doubt"
        )
    return module.eval().to(device), ModelInfo.from_hparams(hparams)


def load_predictor(
    ckpt: str | Path, device: str = "auto", amp: bool = False, **options: Any
) -> Predictor:
    """A Predictor for a checkpoint; `options` are Predictor's (mode, overlap, flip, ...)."""
    resolved = resolve_device(device)
    module, info = load_checkpoint(ckpt, resolved)
    return Predictor(
        module, info, resolved, autocast_dtype=autocast_dtype(amp, resolved), **options
    )


def _scale_image(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    return resize_image(image, [max(1, round(v * scale)) for v in image.shape[:2]])


def _round_to_multiple(value: float) -> int:
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def _round_up(value: int) -> int:
    return -(-value // SIZE_MULTIPLE) * SIZE_MULTIPLE


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad bottom and right (zero is the mean colour after normalisation)."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def _resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _stride(length: int, overlap: float) -> int:
    return max(1, round(length * (1.0 - overlap)))


def _tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile offsets covering [0, length): evenly strided, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, _stride(tile, overlap)))
    return [*starts, length - tile]
