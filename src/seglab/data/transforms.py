"""What a sample becomes on its way to a batch: train-time geometry and augmentation, and the
evaluation view of an image (its `letterbox` canvas with the mask at the image's own size).

Both end in uint8 tensors: normalisation happens on the device, after the batch transfer
(`seglab.preprocessing.normalise`, called by `SegmentationModule.on_after_batch_transfer`). The
evaluation geometry is `seglab.preprocessing`'s, the very functions predict.py uses, so
validation and test metrics are computed on the predictions a user would get, at each image's
own resolution.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate

from seglab.console import say
from seglab.preprocessing import fit_size, letterbox, max_fit_ratio, resize_image, resize_mask


def build_train_transform(
    augmentations: Sequence[dict[str, Any]],
    image_size: Sequence[int],
    scale_range: Sequence[float] = (1.0, 1.0),
    ignore_index: int = 255,
    crop_size: Sequence[int] | None = None,
    channels: int = 3,
    upscale: bool = False,
) -> A.Compose:
    """Geometry first, then the configured augmentations (each a `_target_` dict), then tensors.

    The geometry never squashes an image: it is fitted into `image_size` with its aspect kept
    (`FitInto`, as evaluation does: enlarged only with `upscale`), scaled by a random factor
    from `scale_range` (scale jitter: objects are seen a little smaller and larger than at
    test time), then padded with ignored pixels where it is smaller than `crop_size` (default:
    `image_size`) and cropped at a random place where it is larger. A crop smaller than the
    image trains at the evaluation scale on fewer pixels per sample: more optimizer steps in
    the same time.

    Images of `channels` other than 3 leave out, with a printed note, each configured
    transform that cannot take them (`usable`): albumentations' colour transforms
    (ColorJitter, HueSaturationValue, ToGray, CLAHE, RGBShift, ...) need RGB, while geometry
    and the intensity ones (RandomBrightnessContrast, RandomGamma, GaussNoise) take any count.
    """
    height, width = (int(v) for v in image_size)
    crop_h, crop_w = (int(v) for v in (crop_size or image_size))
    low, high = (float(v) for v in scale_range)
    if not 0 < low <= high:
        raise ValueError(
            f"augmentation.scale={list(scale_range)}: give [low, high] with 0 < low <= high"
        )
    geometry: list[Any] = [FitInto((height, width), upscale)]
    if (low, high) != (1.0, 1.0):
        geometry.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0))
    geometry += [
        A.PadIfNeeded(
            min_height=crop_h,
            min_width=crop_w,
            position="top_left",  # where evaluation puts the image on its canvas
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=ignore_index,
        ),
        A.RandomCrop(height=crop_h, width=crop_w),
    ]
    return A.Compose([*geometry, *augmentation_steps(augmentations, channels), ToTensorV2()])


class FitInto(A.DualTransform):
    """The image fitted into `canvas` as evaluation fits it (`seglab.preprocessing.fit_size`:
    aspect kept, enlarged only with `upscale`), bilinear; its mask nearest-neighbour. One
    definition of the fit for training and evaluation, so the network learns at the scale it
    is evaluated at."""

    def __init__(self, canvas: Sequence[int], upscale: bool = False):
        super().__init__(p=1.0)
        self.canvas = (int(canvas[0]), int(canvas[1]))
        self.upscale = bool(upscale)

    def _size(self, shape: Sequence[int]) -> tuple[int, int]:
        return fit_size(shape, self.canvas, max_fit_ratio(self.upscale))

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_image(img, self._size(img.shape))

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return resize_mask(mask, self._size(mask.shape))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("canvas", "upscale")


def build_window_transform(augmentations: Sequence[dict[str, Any]], channels: int = 3) -> A.Compose:
    """`data.sampling=tile`'s train transform: the configured augmentations and tensors, no
    geometry (the windows are cut at native resolution by `seglab.data.tiles`)."""
    return A.Compose([*augmentation_steps(augmentations, channels), ToTensorV2()])


def augmentation_steps(augmentations: Sequence[dict[str, Any]], channels: int) -> list[Any]:
    """The configured albumentations transforms, those that cannot take `channels` left out."""
    steps = [instantiate(cfg, _convert_="all") for cfg in augmentations]
    if channels != 3:
        steps = [step for step in steps if usable(step, channels)]
    return steps


def usable(step: Any, channels: int) -> bool:
    """Whether an albumentations transform runs on `channels`-channel uint8 images: tried once,
    forced on, on a small random image. A transform that fails is left out, and said so (its
    own message names what it needs); the run goes on with the rest."""
    trial = copy.deepcopy(step)
    trial.p = 1.0
    image = np.random.default_rng(0).integers(0, 256, (32, 32, channels), dtype=np.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = trial(image=image, mask=np.zeros((32, 32), np.uint8))["image"]
        if out.shape[-1] != channels and getattr(out, "ndim", 0) == 3:
            raise ValueError(f"it returned {out.shape[-1]} channels")
    except Exception as err:  # albumentations raises TypeError, ValueError, ...
        say(
            f"augmentation.train: left out {type(step).__name__} for {channels}-channel images "
            f"({str(err).strip()[:120]}); list only transforms that take them to silence this"
        )
        return False
    return True


@dataclass(frozen=True)
class EvalTransform:
    """An image as evaluation sees it: its `letterbox` canvas of the training size (what the
    network gets), the mask untouched at the image's own size (what the metrics count), and
    both sizes, so the module can bring the logits back (`restore_logits`).

    A class, not a closure, so that loader workers can pickle it.
    """

    image_size: tuple[int, int]
    upscale: bool = False  # data.upscale: images smaller than image_size enlarged to fit it

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
        max_ratio = max_fit_ratio(self.upscale)
        canvas = letterbox(image, self.image_size, max_ratio)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "size": torch.tensor(image.shape[:2]),
            "fitted": torch.tensor(fit_size(image.shape[:2], self.image_size, max_ratio)),
        }


def build_eval_transform(image_size: Sequence[int], upscale: bool = False) -> EvalTransform:
    return EvalTransform((int(image_size[0]), int(image_size[1])), bool(upscale))


@dataclass(frozen=True)
class EvalCollate:
    """Stack evaluation samples: the canvases have one size; the masks keep their own and are
    padded to the batch's largest with `ignore_index`, which no metric counts."""

    ignore_index: int

    def __call__(self, samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {
            "image": torch.stack([s["image"] for s in samples]),
            "mask": pad_masks([s["mask"] for s in samples], self.ignore_index),
            "size": torch.stack([s["size"] for s in samples]),
            "fitted": torch.stack([s["fitted"] for s in samples]),
        }
        if "index" in samples[0]:  # SegmentationDataset's samples name their image by it
            batch["index"] = torch.stack([s["index"] for s in samples])
        return batch


def pad_masks(masks: Sequence[torch.Tensor], ignore_index: int) -> torch.Tensor:
    """Masks of their own sizes stacked at the largest, padded with `ignore_index`."""
    height = max(int(m.shape[0]) for m in masks)
    width = max(int(m.shape[1]) for m in masks)
    out = masks[0].new_full((len(masks), height, width), ignore_index)
    for i, mask in enumerate(masks):
        out[i, : mask.shape[0], : mask.shape[1]] = mask
    return out
