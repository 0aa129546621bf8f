"""LightningDataModule over a CVAT export: splits, loaders, and the bundled demo data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import to_absolute_path
from torch.utils.data import DataLoader

from seglab.data.cvat import DatasetError, SegClass, SegmentationExport, read_export
from seglab.data.dataset import SegmentationDataset
from seglab.data.transforms import build_eval_transform, build_train_transform


class SegmentationDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str,
        image_size: Sequence[int] = (512, 512),
        batch_size: int = 8,
        num_workers: int | str = "auto",
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        ignore_index: int = 255,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = "test",
        images_dir: str | None = None,
        labelmap: str | None = None,
        augmentation: Sequence[dict[str, Any]] = (),
        demo: bool = False,
    ):
        super().__init__()
        self.path = Path(to_absolute_path(path))
        self.images_dir = Path(to_absolute_path(images_dir)) if images_dir else None
        self.labelmap = Path(to_absolute_path(labelmap)) if labelmap else None
        self.image_size = tuple(int(v) for v in image_size)
        if len(self.image_size) != 2 or any(v % 32 for v in self.image_size):
            raise ValueError(
                f"data.image_size={list(image_size)}: give [height, width], each a multiple of 32 "
                "(the encoders downsample 5 times)"
            )
        self.batch_size = batch_size
        self.num_workers = _resolve_workers(num_workers)
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.augmentation = list(augmentation)
        self.demo = demo

    def prepare_data(self) -> None:
        if self.demo and not self.path.exists():
            from seglab.demo import write_demo_export

            print(f"Writing the demo CVAT export to {self.path}")
            write_demo_export(self.path)

    @cached_property
    def export(self) -> SegmentationExport:
        self.prepare_data()
        export = read_export(self.path, images_dir=self.images_dir, labelmap=self.labelmap)
        for split in (self.train_split, self.val_split):
            if not export.split(split):
                raise DatasetError(
                    f"{self.path}: split {split!r} is empty or missing; the export has "
                    f"{export.splits}. Set data.train_split / data.val_split to subset names "
                    "from ImageSets/Segmentation"
                )
        return export

    @property
    def classes(self) -> tuple[SegClass, ...]:
        return self.export.classes

    @property
    def has_test(self) -> bool:
        return bool(self.test_split) and bool(self.export.split(self.test_split))

    def _dataset(self, split: str, train: bool) -> SegmentationDataset:
        transform = (
            build_train_transform(self.augmentation, self.mean, self.std)
            if train
            else build_eval_transform(self.image_size, self.mean, self.std)
        )
        return SegmentationDataset(self.export.split(split), self.classes, transform)

    def _loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(
            self._dataset(split, train),
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(self.export.split(split)) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, train=False)

    def test_dataloader(self) -> DataLoader:
        if not self.has_test:
            raise DatasetError(f"{self.path}: no {self.test_split!r} split to test on")
        return self._loader(self.test_split, train=False)


def _resolve_workers(num_workers: int | str) -> int:
    if num_workers == "auto":
        return min(8, os.cpu_count() or 1)
    return int(num_workers)
