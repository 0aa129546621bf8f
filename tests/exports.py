"""Writers of small real datasets in each layout users bring, for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seglab.data.cvat_writer import write_labelmap
from seglab.data.labelmap import SegClass

CLASSES = (
    SegClass("background", (0, 0, 0)),
    SegClass("tool", (250, 50, 83)),
    SegClass("blood vessel", (51, 221, 255)),
)


def striped(height: int = 6, width: int = 5, n: int = 3) -> np.ndarray:
    """A class-index mask whose row r holds class r % n."""
    return np.repeat((np.arange(height) % n)[:, None], width, axis=1).astype(np.uint8)


def to_rgb(index: np.ndarray, classes=CLASSES) -> np.ndarray:
    return np.asarray([c.color for c in classes], np.uint8)[index]


def save_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def save_image(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), np.uint8))
    return path


def write_cvat(
    root: Path,
    subsets: dict[str, dict[str, np.ndarray]],
    classes=CLASSES,
    image_ext: str = ".jpg",
) -> Path:
    """A CVAT export: `{subset: {item_id: index_mask}}`, masks painted with the label colours."""
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    write_labelmap(root / "labelmap.txt", classes)
    for subset, items in subsets.items():
        for item, index in items.items():
            save_image(root / "JPEGImages" / f"{item}{image_ext}", *index.shape)
            save_rgb(root / "SegmentationClass" / f"{item}.png", to_rgb(index, classes))
        lines = "".join(f"{item}\n" for item in items)
        (root / "ImageSets" / "Segmentation" / f"{subset}.txt").write_text(lines)
    return root


def write_folders(
    root: Path, splits: dict[str, dict[str, np.ndarray]], classes=CLASSES, index_masks: bool = False
) -> Path:
    """images/<split>/ + masks/<split>/ (split '' = flat); colour masks + labelmap, or class ids."""
    for split, items in splits.items():
        for item, index in items.items():
            rel = f"{split}/{item}" if split else item
            save_image(root / "images" / f"{rel}.jpg", *index.shape)
            mask_path = root / "masks" / f"{rel}.png"
            if index_masks:
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(index).save(mask_path)
            else:
                save_rgb(mask_path, to_rgb(index, classes))
    if not index_masks:
        write_labelmap(root / "labelmap.txt", classes)
    return root
