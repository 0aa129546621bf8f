"""Torch dataset: decode an image and its colour mask, map colours to classes, augment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.cvat import DatasetError, Sample, SegClass
from seglab.data.masks import ColorToIndex, read_color_mask

Transform = Callable[..., dict]


def read_image(path: Path) -> np.ndarray:
    """Read any image OpenCV can decode as (H, W, 3) RGB uint8."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: cannot read image (missing, corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class SegmentationDataset(Dataset):
    def __init__(
        self, samples: Sequence[Sample], classes: Sequence[SegClass], transform: Transform
    ):
        self.samples = list(samples)
        self.to_index = ColorToIndex([c.color for c in classes])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image and its class-index mask, before any transform."""
        sample = self.samples[i]
        image = read_image(sample.image)
        color_mask = read_color_mask(sample.mask)
        if image.shape[:2] != color_mask.shape[:2]:
            (mh, mw), (ih, iw) = color_mask.shape[:2], image.shape[:2]
            raise DatasetError(
                f"{sample.mask}: mask is {mw}x{mh} but image {sample.image} is {iw}x{ih} (WxH); "
                "resize neither: re-export the mask from CVAT for the image as it is"
            )
        return image, self.to_index(color_mask, source=sample.mask)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = self.load(i)
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"].long()}
