"""Scoring predictions against ground truth (`labels=`): find each image's mask, map its labels
to the model's classes by name, count pixels in a confusion matrix, and report the metrics
exactly as validation computes them (metrics.json, confusion.csv/.png).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.atomic import atomic_write_text
from seglab.console import say
from seglab.data.archive import find_dataset_root
from seglab.data.errors import DatasetError
from seglab.data.labelmap import parse_labelmap
from seglab.data.masks import MaskDecoder
from seglab.errors import MissingFileError
from seglab.metrics import (
    confusion_update,
    format_table,
    metrics_from_confusion,
    write_confusion,
)
from seglab.prediction.info import ModelInfo


class LabelFiles:
    """Ground-truth masks for the predicted images, to score the predictions.

    `path` is a CVAT export (folder or .zip: masks from SegmentationClass/, colours from its
    labelmap.txt) or a folder of masks whose paths mirror the input's, coloured with a
    labelmap.txt beside them (or at the dataset root above `masks/<split>/`), else with the
    checkpoint's colours; single-channel masks hold class ids. Labels are matched to the
    model's classes by name.
    """

    def __init__(self, path: str | Path, info: ModelInfo):
        path = Path(path).expanduser()
        if path.suffix.lower() == ".zip" or (path / "labelmap.txt").is_file():
            path = find_dataset_root(path.resolve())
        if not path.is_dir():
            raise MissingFileError(f"labels={path}: no such folder or .zip")
        self.masks = path / "SegmentationClass" if (path / "SegmentationClass").is_dir() else path
        labelmap = next((p for p in self._labelmap_candidates(path) if p.is_file()), None)
        names = info.names
        labels = info.seg_classes if labelmap is None else list(parse_labelmap(labelmap))
        self.not_in_model = [lb for lb in labels if lb.name not in names]
        if len(self.not_in_model) == len(labels):
            raise DatasetError(
                f"{labelmap}: none of its labels ({', '.join(lb.name for lb in labels)}) is a "
                f"class of the model ({', '.join(names)}); give the labels of this model's classes"
            )
        targets = [names.index(lb.name) if lb.name in names else info.ignore_index for lb in labels]
        self.decoder = MaskDecoder([lb.color for lb in labels], targets, info.ignore_index)

    @staticmethod
    def _labelmap_candidates(path: Path) -> list[Path]:
        candidates = [path / "labelmap.txt"]
        if path.parent.name == "masks":  # images/<split>/ + masks/<split>/ + labelmap.txt
            candidates.append(path.parent.parent / "labelmap.txt")
        return candidates

    def mask_path(self, relative: Path) -> Path | None:
        path = self.masks / relative.with_suffix(".png")
        return path if path.is_file() else None

    def read(self, mask_path: Path, image_path: Path, shape: tuple[int, int]) -> np.ndarray:
        mask = self.decoder(mask_path)
        if mask.shape != shape:
            raise DatasetError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{shape[1]}x{shape[0]} (WxH); labels must be the masks of these very images"
            )
        return mask


class Scoring:
    """The scores of a prediction run: `add` each predicted image, then `finish`."""

    def __init__(self, labels: LabelFiles, info: ModelInfo):
        self.labels, self.info = labels, info
        n = len(info.classes)
        self.confusion = np.zeros((n, n), np.int64)
        self.scored = 0
        self.unlabeled: list[Path] = []  # relative paths of images without a mask

    def add(self, relative: Path, image_path: Path, predicted: np.ndarray) -> None:
        mask_path = self.labels.mask_path(relative)
        if mask_path is None:
            self.unlabeled.append(relative)
            return
        target = self.labels.read(mask_path, image_path, predicted.shape)
        confusion_update(self.confusion, target, predicted, self.info.ignore_index)
        self.scored += 1

    def finish(self, output: Path) -> dict[str, Any]:
        """Print and write (metrics.json, confusion.csv/.png) the scores of the labelled
        images; the metrics as a dict (NaN as None, as in the JSON)."""
        if not self.scored and self.unlabeled:
            raise DatasetError(
                f"labels: no predicted image has a mask under {self.labels.masks} (looked for "
                f"{self.unlabeled[0].with_suffix('.png')}, ...); masks must mirror the input paths"
            )
        if self.unlabeled:
            listed = ", ".join(p.as_posix() for p in self.unlabeled[:10])
            say(f"labels: {len(self.unlabeled)} image(s) without a mask are not scored: {listed}")
        if self.labels.not_in_model:
            names = ", ".join(lb.name for lb in self.labels.not_in_model)
            say(f"labels: pixels of labels the model does not predict are not scored: {names}")
        names = self.info.names
        confusion = torch.from_numpy(self.confusion)
        metrics = metrics_from_confusion(confusion, names)
        print(format_table(metrics, names, prefix=""))
        write_confusion(confusion, names, output / "confusion")
        result: dict[str, Any] = {k: None if math.isnan(v) else v for k, v in metrics.items()}
        result["scored_images"] = self.scored
        result["unscored_images"] = [p.as_posix() for p in self.unlabeled]
        atomic_write_text(output / "metrics.json", json.dumps(result, indent=2) + "\n")
        return result
