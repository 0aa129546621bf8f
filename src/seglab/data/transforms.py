"""Albumentations pipelines: train-time augmentation from config, deterministic eval-time resize."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate


def build_train_transform(
    augmentations: Sequence[dict[str, Any]],
    mean: Sequence[float],
    std: Sequence[float],
) -> A.Compose:
    """Augmentations from config (each a `_target_` dict), then normalise and convert to tensors."""
    steps = [instantiate(cfg, _convert_="all") for cfg in augmentations]
    return A.Compose([*steps, A.Normalize(mean=mean, std=std), ToTensorV2()])


def build_eval_transform(
    image_size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """Resize to the training size and normalise; masks are resized nearest-neighbour."""
    height, width = image_size
    return A.Compose([A.Resize(height, width), A.Normalize(mean=mean, std=std), ToTensorV2()])
