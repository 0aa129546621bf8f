"""LightningDataModule over a CVAT export: splits, loaders, and the bundled demo data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
from hydra.utils import to_absolute_path
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Sampler

from seglab.atomic import atomic_write_text
from seglab.console import say
from seglab.data import tiles
from seglab.data.channels import resolve_channels
from seglab.data.class_weights import pixel_counts, weights_from_counts
from seglab.data.dataset import SegmentationDataset, build_decoder, read_image
from seglab.data.errors import DatasetError
from seglab.data.intensity import Intensity
from seglab.data.labelmap import SegClass
from seglab.data.layouts import SegmentationExport, read_export
from seglab.data.masks import MaskDecoder
from seglab.data.repeat_factors import check_threshold, repeat_sampler
from seglab.data.scan import ScanReport, raise_on_problems, scan_export
from seglab.data.seeding import main_process_seed, seed_augmentation, seed_loader_worker
from seglab.data.sizes import (
    AUTO_CROP_SIDE,
    AUTO_MAX_SIDE,
    auto_crop_size,
    auto_image_size,
    median_fit_scale,
    median_size,
)
from seglab.data.statistics import check_statistic, resolve_statistics
from seglab.data.transforms import EvalCollate, build_eval_transform, build_train_transform
from seglab.data.workers import resolve_workers


class SegmentationDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str,
        image_size: Sequence[int] | str = "auto",
        upscale: bool = False,
        crop_size: Sequence[int] | str | None = "auto",
        crop_pixels: int | None = None,
        batch_size: int = 8,
        num_workers: int | str = "auto",
        mean: Sequence[float] | str = "imagenet",
        std: Sequence[float] | str = "imagenet",
        ignore_index: int = 255,
        images_dir: str | None = None,
        labelmap: str | None = None,
        classes: Sequence[str] | None = None,
        class_order: Sequence[str] | None = None,
        ignore_classes: Sequence[str] = (),
        subset_map: Mapping[str, str] | None = None,
        missing_masks: str = "error",
        unknown_colors: str = "error",
        val_fraction: float = 0.2,
        split_seed: int = 0,
        augmentation: Sequence[dict[str, Any]] = (),
        scale_range: Sequence[float] = (1.0, 1.0),
        intensity: Any = "auto",
        demo: bool = False,
        in_channels: int | str = "auto",
        sampling: str = "resize",
        rare_class_windows: float = 0.0,
        tile_cache_mb: float = 512,
        repeat_threshold: float | None = None,
    ):
        """`image_size`: [height, width] (multiples of 32), or `auto` (see `image_size`);
        `upscale`: whether images smaller than it are enlarged to fit it (else padded).
        `intensity`: how images of more than 8 bits map to uint8 (`seglab.data.intensity`).
        `in_channels`: `model.in_channels` (train.py passes it), `auto` or a number: the
        channels images are read with (`channels`). `mean`, `std`: a list per channel,
        `imagenet` or `auto` (`seglab.data.statistics`, resolved by `mean` and `std`).
        `augmentation` and `scale_range`: the train-time augmentation (conf/augmentation/).
        `sampling`, `rare_class_windows`, `tile_cache_mb`: `seglab.data.tiles` (tile mode).
        `repeat_threshold`: images with rare classes drawn more often (`repeat_factors`)."""
        super().__init__()
        self.path = Path(to_absolute_path(path))
        self.images_dir = Path(to_absolute_path(images_dir)) if images_dir else None
        self.labelmap = Path(to_absolute_path(labelmap)) if labelmap else None
        self.image_size_option = image_size if image_size == "auto" else tuple(image_size)
        if image_size != "auto" and (
            len(self.image_size_option) != 2 or any(int(v) % 32 for v in self.image_size_option)
        ):
            raise ValueError(
                f"data.image_size={list(image_size)}: give [height, width], each a multiple of 32 "
                "(the encoders downsample 5 times), or auto"
            )
        self.upscale = bool(upscale)
        self.crop_size_option = crop_size if crop_size in ("auto", None) else tuple(crop_size)
        self.crop_pixels = crop_pixels  # area cap of an auto crop (`seglab.data.sizes`)
        self.batch_size = batch_size
        self.num_workers = resolve_workers(num_workers)
        self.mean_option = check_statistic(mean, "data.mean")
        self.std_option = check_statistic(std, "data.std")
        self.in_channels_option = in_channels
        self.ignore_index = ignore_index
        self.intensity = Intensity.parse(intensity)
        self.read_options = {
            "classes": list(classes) if classes else None,
            "class_order": list(class_order) if class_order else None,
            "ignore_classes": list(ignore_classes or ()),
            "subset_map": dict(subset_map or {}),
            "missing_masks": missing_masks,
            "val_fraction": val_fraction,
            "split_seed": split_seed,
        }
        self.unknown_colors = unknown_colors
        self.augmentation = list(augmentation)
        self.scale_range = tuple(float(v) for v in scale_range)
        self.demo = demo
        self.scan_report: ScanReport | None = None
        self.sampling = tiles.TileOptions.parse(sampling, rare_class_windows, tile_cache_mb)
        self.repeat_threshold = check_threshold(repeat_threshold)
        if self.sampling.tiled and self.scale_range != (1.0, 1.0):
            say(f"augmentation.scale={list(self.scale_range)} is not applied with "
                "data.sampling=tile: windows are cut at native resolution")  # fmt: skip

    def prepare_data(self) -> None:
        if self.demo and not self.path.exists():
            from seglab.demo import write_demo_export

            say(f"Writing the demo CVAT export to {self.path}")
            write_demo_export(self.path)

    @cached_property
    def export(self) -> SegmentationExport:
        """The parsed dataset, every image and mask already checked by the scan `seglab inspect`
        runs (so the two refuse the same datasets); problems stop the run here."""
        self.prepare_data()
        export = read_export(
            self.path, images_dir=self.images_dir, labelmap=self.labelmap, **self.read_options
        )
        for note in export.notes:
            say(note)
        self.scan_report = scan_export(export, self._decoder(export))
        raise_on_problems(self.scan_report)
        sizes = ", ".join(f"{s} {len(export.split(s))}" for s in export.splits)
        n = len(export.classes)
        say(f"Dataset {export.root} ({export.layout} layout): {n} classes; {sizes}")
        return export

    @cached_property
    def image_size(self) -> tuple[int, int]:
        """The network's input size, [height, width]: `data.image_size`, or for `auto` the
        median training image scaled to a long side of at most AUTO_MAX_SIDE and rounded up to
        multiples of 32 (`seglab.data.sizes.auto_image_size`), printed and stored in the
        checkpoint."""
        if self.image_size_option != "auto":
            return tuple(int(v) for v in self.image_size_option)  # type: ignore[return-value]
        self.export  # noqa: B018  (the scan measures the image sizes)
        sizes = self.scan_report.sizes.get("train", []) if self.scan_report else []
        size = auto_image_size(sizes)
        if self.sampling.tiled:  # the window: each side capped as data.crop_size=auto caps a crop
            size = tuple(min(AUTO_CROP_SIDE, v) for v in size)  # type: ignore[assignment]
        if sizes:
            median = median_size(sizes)
            say(
                f"data.image_size=auto -> {list(size)} (median training image "
                f"{median[0]}x{median[1]}, long side capped at {AUTO_MAX_SIDE}, rounded up to "
                f"multiples of 32"
                f"{', each side at most 512 for tile windows' * self.sampling.tiled}); "
                "set data.image_size=[H,W] to choose"
            )
        return size

    @cached_property
    def channels(self) -> int:
        """The channels every image is read with, `model.in_channels`: for `auto` the training
        images' count (grayscale alone or beside colour: 3), printed when not 3; every image of
        every split must fit it (`seglab.data.channels.resolve_channels`)."""
        self.export  # noqa: B018  (the scan counts each image's channels)
        counts = self.scan_report.channels if self.scan_report else {}
        channels = resolve_channels(self.in_channels_option, counts)
        if self.in_channels_option == "auto" and channels != 3:
            say(f"model.in_channels=auto -> {channels} (the training images' channels)")
        return channels

    @cached_property
    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel in [0, 1] units (`seglab.data.statistics`), measured on the
        train split read as training reads it when asked; `mean` and `std` give each."""
        images = [s.image for s in self.export.split("train")]
        read = partial(read_image, intensity=self.intensity, channels=self.channels)
        return resolve_statistics(self.mean_option, self.std_option, self.channels, images, read)

    mean = property(lambda self: self.statistics[0])
    std = property(lambda self: self.statistics[1])

    @cached_property
    def crop_size(self) -> tuple[int, int]:
        """The training crop, [height, width], taken from each image after it is fitted into
        `image_size` and scale-jittered: `data.crop_size`, `null` for the whole `image_size`,
        or `auto`: `image_size` with each side capped at `AUTO_CROP_SIDE` and its area at
        `crop_pixels` (`seglab.data.sizes.auto_crop_size`). Evaluation and
        prediction always see the whole `image_size`. With `data.sampling=tile` the window is
        `image_size` (`auto` or `null` crops are it; another crop is refused)."""
        if self.sampling.tiled:
            return tiles.tile_window(self.crop_size_option, self.image_size)
        if self.crop_size_option is None:
            return self.image_size
        if self.crop_size_option == "auto":
            crop = auto_crop_size(self.image_size, self.crop_pixels)
            if crop != self.image_size:
                area = f", about {self.crop_pixels} pixels" if self.crop_pixels else ""
                say(
                    f"data.crop_size=auto -> {list(crop)} (random crops of the "
                    f"{list(self.image_size)} image, each side at most {AUTO_CROP_SIDE}{area}); "
                    "set data.crop_size=[H,W] to choose, null for whole images"
                )
            return crop
        return tuple(int(v) for v in self.crop_size_option)  # type: ignore[return-value]

    def class_weights(self, method: str) -> list[float] | None:
        """Per-class loss weights from the train split's pixel frequencies, in class-index order
        (`method`: one of `METHODS`; the `*_if_rare` ones may give None; see
        `seglab.data.class_weights`).

        The pixels come from the scan that `export` runs anyway, so no mask is read twice; they
        are counted through the training decoder only if no scan report exists.
        """
        export = self.export  # runs the scan
        counts = self.scan_report.pixels.get("train") if self.scan_report else None
        if counts is None:
            train = self.dataset("train")
            counts = pixel_counts(
                lambda i: train.load(i)[1], len(train), len(export.classes), self.ignore_index
            )
        return weights_from_counts(counts, method)

    @property
    def outline_share(self) -> float | None:
        """The share of training pixels within 2 pixels of another class, as training sees
        them (`ScanReport.outline_share` over the median image's fit scale: outlines of images
        shrunk 2x are twice as dense); `model.decoder_output_stride: auto` reads it."""
        self.export  # noqa: B018  (the scan counts them)
        share = self.scan_report.outline_share("train") if self.scan_report else None
        if share is None or self.sampling.tiled:  # windows are cut at native resolution
            return share
        sizes = self.scan_report.sizes.get("train", [])
        return min(1.0, share / median_fit_scale(sizes, self.image_size, self.upscale))

    @property
    def classes(self) -> tuple[SegClass, ...]:
        return self.export.classes

    @property
    def has_test(self) -> bool:
        return bool(self.export.split("test"))

    def dataset(self, split: str, train: bool = False) -> SegmentationDataset | tiles.TileDataset:
        """The split's samples with train-time augmentation or the deterministic eval transform;
        with `data.sampling=tile`, windows (train) or whole images for sliding windows (eval)."""
        export = self.export
        dataset = SegmentationDataset(
            export.split(split), self._decoder(export), self._transform(train),
            export.background_index, self.intensity, self.channels,
        )  # fmt: skip
        if not (train and self.sampling.tiled):
            return dataset
        report = self.scan_report  # each image's size, the classes' pixels: from the scan
        return tiles.TileDataset(
            dataset, report.sizes.get(split, []) if report else [], self.crop_size,
            self.ignore_index, self.sampling, report.pixels.get(split) if report else None,
        )  # fmt: skip

    def _transform(self, train: bool) -> Any:
        if self.sampling.tiled:
            return tiles.tile_transform(train, self.augmentation, self.channels)
        if not train:
            return build_eval_transform(self.image_size, self.upscale)
        return build_train_transform(
            self.augmentation, self.image_size, self.scale_range, self.ignore_index,
            crop_size=self.crop_size, channels=self.channels, upscale=self.upscale,
        )  # fmt: skip

    @rank_zero_only
    def write_splits(self, folder: Path) -> None:
        """Record which image went to which split, so the run can be reproduced."""
        folder.mkdir(parents=True, exist_ok=True)
        for split in self.export.splits:
            ids = [s.id for s in self.export.split(split)]
            atomic_write_text(folder / f"{split}.txt", "\n".join(ids) + "\n")

    def _decoder(self, export: SegmentationExport) -> MaskDecoder:
        return build_decoder(export, self.ignore_index, self.unknown_colors)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        if self.num_workers > 0:
            # Each worker then decodes on one thread instead of starting OpenCV's pool (one
            # thread per core) in every worker: +12% loader throughput at 512 px on 2 cores.
            # Set here, before the workers fork: setting it inside a forked worker can deadlock
            # on the pool the parent started.
            cv2.setNumThreads(0)
        elif train:
            seeded = dataset if isinstance(dataset, tiles.TileDataset) else dataset.transform
            seed_augmentation(seeded, main_process_seed())
        sampler = self._train_sampler() if train else self._eval_sampler(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(dataset) > self.batch_size,  # tile: windows, not images
            num_workers=self.num_workers,
            collate_fn=None if train else self._eval_collate(self.ignore_index),
            persistent_workers=self.num_workers > 0,
            worker_init_fn=seed_loader_worker if self.num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
        )

    def _eval_collate(self, ignore_index: int) -> EvalCollate | tiles.SlideCollate:
        return (tiles.SlideCollate if self.sampling.tiled else EvalCollate)(ignore_index)

    def _train_sampler(self) -> Sampler | None:
        """`data.repeat_threshold` over the scan's classes per image (not for tile windows)."""
        if self.sampling.tiled or self.scan_report is None:
            return None
        presence = self.scan_report.presence.get("train", [])
        return repeat_sampler(presence, self.repeat_threshold, self.export.class_names)

    def _eval_sampler(self, dataset: SegmentationDataset | tiles.TileDataset) -> Sampler | None:
        """Under DDP, each image on exactly one process. Lightning's default DistributedSampler
        pads the last batch with repeated images, which would count their pixels twice."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if not self.has_test:
            raise DatasetError(f"{self.path}: no test split to test on")
        return self._loader("test", train=False)
