"""What predict.py writes per image (index, colour and overlay images, probabilities) and the
CVAT export of all predictions, every file atomically (`seglab.atomic`): a killed run leaves
the previous outputs whole and at most hidden partial files, which the next run removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from seglab.atomic import atomic_write, remove_stale
from seglab.data.channels import display_rgb
from seglab.data.cvat_writer import CvatWriter
from seglab.data.masks import color_png, colorize
from seglab.errors import ConfigError
from seglab.prediction.info import ModelInfo
from seglab.prediction.predictor import to_probabilities

OUTPUT_KINDS = ("index", "color", "overlay", "probs")
CVAT_ZIP = "cvat_export.zip"


class MaskWriter:
    """Writes each image's requested outputs next to its mirrored path under `output`."""

    def __init__(
        self,
        output: Path,
        kinds: Sequence[str],
        info: ModelInfo,
        alpha: float,
        bands: Sequence[int] | None = None,
    ):
        """`bands`: the three bands of an image the overlay shows as RGB (`overlay_bands`;
        `seglab.data.channels.display_rgb`: by default RGB as it is, grayscale repeated, the
        first three bands of other images)."""
        unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
        if unknown or not kinds:
            raise ConfigError(f"outputs={list(kinds)}: choose from {list(OUTPUT_KINDS)}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"overlay_alpha={alpha}: give the mask's weight in [0, 1]")
        self.output, self.kinds, self.alpha = output, set(kinds), alpha
        self.palette = np.asarray(info.colors, np.uint8)
        self.bands = list(bands) if bands is not None else None
        if self.bands is not None:  # a wrong choice fails before any image is predicted
            display_rgb(np.zeros((1, 1, info.in_channels), np.uint8), self.bands)
        self._folders: set[Path] = set()  # created and cleaned of stale partial files

    def write(
        self, relative: Path, image: np.ndarray, labels: np.ndarray, logits: torch.Tensor
    ) -> None:
        stem = self.stem(relative)
        if "index" in self.kinds:
            _imwrite(stem.with_name(f"{stem.name}_index.png"), labels)
        if "color" in self.kinds:
            encoded = color_png(labels, self.palette)
            atomic_write(stem.with_name(f"{stem.name}_color.png"), lambda p: p.write_bytes(encoded))
        if "overlay" in self.kinds:
            shown = display_rgb(image, self.bands)
            color = colorize(labels, self.palette)
            blended = cv2.addWeighted(shown, 1.0 - self.alpha, color, self.alpha, 0.0)
            _imwrite(stem.with_name(f"{stem.name}_overlay.jpg"), blended[..., ::-1])
        if "probs" in self.kinds:
            probs = to_probabilities(logits).half().cpu().numpy()
            atomic_write(stem.with_name(f"{stem.name}_probs.npy"), lambda p: np.save(p, probs))

    def stem(self, relative: Path) -> Path:
        """The path of `relative`'s outputs less their `_index.png`-like endings, its folder
        ready (also for `seglab.prediction.streaming`, which writes the same files)."""
        stem = self.output / relative.with_suffix("")
        self._prepare_folder(stem.parent)
        return stem

    def _prepare_folder(self, folder: Path) -> None:
        """The first write into a folder creates it and removes partial files that a killed
        earlier run left there."""
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale(folder)
            self._folders.add(folder)


def cvat_zip(output: Path, info: ModelInfo, min_area: int = 0) -> CvatWriter:
    """The writer of `output/cvat_export.zip`, which replaces an earlier one only once complete;
    regions under `min_area` pixels are left out of it."""
    return CvatWriter(output / CVAT_ZIP, info.seg_classes, replace=True, min_area=min_area)


def _imwrite(path: Path, array: np.ndarray) -> None:
    def write(partial: Path) -> None:  # cv2 picks the format by the suffix, which is kept
        if not cv2.imwrite(str(partial), np.ascontiguousarray(array)):
            raise OSError(f"{path}: could not write file")

    atomic_write(path, write)
