"""Albumentations pipelines: train-time augmentation from config, deterministic eval-time resize.

Both end in uint8 tensors: normalisation happens on the device, after the batch transfer
(`SegmentationModule.on_after_batch_transfer`), where it costs nothing, instead of in the loader
workers, where it was the most expensive step of a sample (2.9 ms of ~7 at 512 px), and the
float32 images were 4x more bytes to pass between processes and copy to the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate


def build_train_transform(augmentations: Sequence[dict[str, Any]]) -> A.Compose:
    """Augmentations from config (each a `_target_` dict), then conversion to tensors."""
    steps = [instantiate(cfg, _convert_="all") for cfg in augmentations]
    return A.Compose([*steps, ToTensorV2()])


def build_eval_transform(image_size: Sequence[int]) -> A.Compose:
    """Resize to the training size; masks are resized nearest-neighbour."""
    height, width = image_size
    return A.Compose([A.Resize(height, width), ToTensorV2()])
