"""A CVAT auto-annotation function: a seglab model pre-annotates a CVAT task's frames.

    cvat-cli --server-host https://cvat.example.com --auth USER task auto-annotate TASK_ID \\
        --function-module seglab.cvat_function -p ckpt=str:best.ckpt --allow-unmatched-labels

It follows cvat-sdk's detection-function protocol (`cvat_sdk.auto_annotation`): cvat-cli calls
`create(**parameters)` with the `-p NAME=TYPE:VALUE` options, then `detect(context, image)` for
every frame, and the SDK matches the function's labels to the task's **by name**. Each frame
goes through seglab's Predictor (the preprocessing, modes, TTA and backends of predict.py), and
every connected region of a class becomes one mask shape (`cvat_sdk.masks.encode_mask`), or
a polygon when the task is annotated with `--conv-mask-to-poly`. `background` is never sent.
Regions under `min_area` pixels are dropped, and counted (`dropped_regions`).

Classes the task lacks: with `--allow-unmatched-labels` the SDK reports each one and skips its
shapes; without it the SDK refuses to start, naming the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from seglab.console import say
from seglab.data.labelmap import BACKGROUND
from seglab.errors import ConfigError, MissingExtraError
from seglab.prediction.load import load_predictor
from seglab.prediction.predictor import AUTO_MODE, MODES, Predictor

INSTALL_HINT = 'the CVAT function needs cvat-sdk: pip install "seglab[cvat]"'


def _sdk() -> tuple[Any, Any]:
    try:
        import cvat_sdk.auto_annotation as cvataa
        from cvat_sdk.masks import encode_mask
    except ImportError as err:
        raise MissingExtraError(INSTALL_HINT) from err
    return cvataa, encode_mask


class SegmentationFunction:
    """cvat-sdk's DetectionFunction over a seglab Predictor."""

    def __init__(self, predictor: Predictor, min_area: int = 16):
        if min_area < 1:
            raise ConfigError(f"min_area={min_area}: give at least 1 pixel")
        if predictor.info.in_channels not in (1, 3):
            raise ConfigError(
                f"the model takes {predictor.info.in_channels}-channel images; CVAT sends RGB "
                "frames, so only 1- and 3-channel models can auto-annotate in CVAT"
            )
        cvataa, _ = _sdk()
        self.predictor, self.min_area = predictor, int(min_area)
        names = predictor.info.names
        self.sent_classes = [i for i, name in enumerate(names) if name != BACKGROUND]
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(names[i], i, type="mask") for i in self.sent_classes]
        )
        self.dropped_regions = 0  # regions under min_area, over every frame so far

    def detect(self, context: Any, image: Any) -> list[Any]:
        """One frame (a PIL image) -> one mask (or polygon) shape per connected class region."""
        if self.predictor.info.in_channels == 1:  # a model trained on grayscale channels
            pixels = np.asarray(image.convert("L"))[..., None]
        else:
            pixels = np.asarray(image.convert("RGB"))
        labels = self.predictor.predict(pixels)
        shapes, dropped = regions_to_shapes(
            labels, self.sent_classes, self.min_area, bool(context.conv_mask_to_poly)
        )
        self.dropped_regions += dropped
        if dropped:
            say(f"{context.frame_name}: dropped {dropped} region(s) under min_area={self.min_area}")
        return shapes


def regions_to_shapes(
    labels: np.ndarray, classes: Sequence[int], min_area: int, as_polygons: bool = False
) -> tuple[list[Any], int]:
    """CVAT shapes for each 8-connected region of `classes` in a class-index mask, and the
    number of regions left out for being under `min_area` pixels."""
    cvataa, encode_mask = _sdk()
    shapes, dropped = [], 0
    for class_id in classes:
        binary = (labels == class_id).astype(np.uint8)
        if not binary.any():
            continue
        count, regions, stats, _ = cv2.connectedComponentsWithStats(binary, None, 8)
        for region in range(1, count):
            x, y, width, height, area = (int(v) for v in stats[region])
            if area < min_area:
                dropped += 1
                continue
            bitmap = regions == region
            if as_polygons:
                shapes += _polygons(cvataa, class_id, bitmap)
                continue
            points = encode_mask(bitmap, bbox=[x, y, x + width, y + height])
            shapes.append(cvataa.mask(class_id, points))
    return shapes, dropped


def _polygons(cvataa: Any, class_id: int, bitmap: np.ndarray) -> list[Any]:
    """The region's outer contour as a polygon (CVAT's polygons have no holes)."""
    contours, _ = cv2.findContours(
        bitmap.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return [
        cvataa.polygon(class_id, [float(v) for v in contour.reshape(-1)])
        for contour in contours
        if len(contour) >= 3
    ]


def create(
    ckpt: str = "",
    model: str = "",
    mode: str = AUTO_MODE,
    flip: bool = False,
    scales: str = "1.0",
    overlap: float = 0.25,
    min_area: int = 16,
    device: str = "auto",
    amp: bool = False,
    batch_size: int | str = "auto",
) -> SegmentationFunction:
    """The function for cvat-cli's `-p` options: `ckpt=str:PATH` (a checkpoint) or
    `model=str:PATH.onnx`; `mode=str:slide`, `flip=bool:true`, `scales=str:0.75,1,1.25`,
    `min_area=int:64`, `device=str:cuda`, as in predict.py."""
    if bool(ckpt) == bool(model):
        raise ConfigError("give one of ckpt=str:PATH (a .ckpt) or model=str:PATH (an .onnx)")
    if mode not in (AUTO_MODE, *MODES):
        raise ConfigError(f"mode={mode!r}: choose one of {[AUTO_MODE, *MODES]}")
    try:
        scale_list = [float(s) for s in str(scales).split(",")]
    except ValueError:
        raise ConfigError(f"scales={scales!r}: give numbers separated by commas") from None
    predictor = load_predictor(
        ckpt or model,
        device,
        amp=amp,
        mode=mode,
        flip=flip,
        scales=scale_list,
        overlap=overlap,
        batch_size=batch_size,
    )
    return SegmentationFunction(predictor, min_area=min_area)
