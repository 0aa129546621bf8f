"""The CVAT auto-annotation function, driven through cvat-sdk's own types and label mapping.

No CVAT server is reachable here: the function is called as the SDK's driver calls it (its
context type, PIL frames), its shapes are decoded with the SDK's `decode_mask`, and its labels
are matched to a task's by the SDK's own mapper. The upload to a server is not exercised.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

cvataa = pytest.importorskip("cvat_sdk.auto_annotation")
from cvat_sdk import models  # noqa: E402
from cvat_sdk.auto_annotation.driver import (  # noqa: E402
    _AnnotationMapper,
    _DetectionFunctionContextImpl,
)
from cvat_sdk.masks import decode_mask  # noqa: E402

from seglab import cvat_function  # noqa: E402
from seglab.errors import ConfigError  # noqa: E402
from seglab.prediction.run import run as predict_run  # noqa: E402
from tests.helpers import compose_predict  # noqa: E402


def _rebuild(shapes: list, height: int, width: int) -> np.ndarray:
    """The class-index mask the shapes describe; 0 (background) where none."""
    labels = np.zeros((height, width), np.int64)
    for shape in shapes:
        bitmap = decode_mask(shape.points, image_width=width, image_height=height)
        assert not labels[bitmap].any(), "shapes overlap"
        labels[bitmap] = shape.label_id
    return labels


def test_function_shapes_equal_predict_py_masks(trained_run: dict, tmp_path: Path):
    ckpt = trained_run["metrics"]["best_ckpt"]
    frames = trained_run["export"] / "JPEGImages"
    out = tmp_path / "predicted"
    predict_run(
        compose_predict(
            [
                f"ckpt={ckpt}",
                f"input={frames}",
                f"output={out}",
                "outputs=[index]",
                "progress=false",
            ]
        )
    )
    function = cvat_function.create(ckpt=ckpt, min_area=1)
    assert [label.name for label in function.spec.labels] == ["leaf", "stone", "berry"]
    compared = 0
    for frame in sorted(frames.iterdir()):
        context = _DetectionFunctionContextImpl(frame_name=frame.name)
        shapes = function.detect(context, Image.open(frame))
        assert all(s.type.value == "mask" and s.frame == 0 for s in shapes)
        expected = cv2.imread(str(out / f"{frame.stem}_index.png"), cv2.IMREAD_UNCHANGED)
        rebuilt = _rebuild(shapes, *expected.shape)
        assert np.array_equal(rebuilt, expected), frame.name
        regions = sum(
            cv2.connectedComponents((expected == c).astype(np.uint8), None, 8)[0] - 1
            for c in (1, 2, 3)
        )
        assert len(shapes) == regions  # one shape per connected region, background never sent
        compared += 1
    assert compared == len(list(frames.iterdir()))


def test_min_area_drops_specks_and_counts_them():
    labels = np.zeros((20, 20), np.int64)
    labels[2:8, 2:8] = 1  # 36 px
    labels[15, 15] = 1  # a 1-pixel speck
    labels[10:12, 0:3] = 2  # 6 px
    shapes, dropped = cvat_function.regions_to_shapes(labels, [1, 2], min_area=10)
    assert dropped == 2 and len(shapes) == 1
    assert decode_mask(shapes[0].points, image_width=20, image_height=20).sum() == 36
    polygons, _ = cvat_function.regions_to_shapes(labels, [1], min_area=10, as_polygons=True)
    assert [p.type.value for p in polygons] == ["polygon"]
    assert polygons[0].points == [2.0, 2.0, 2.0, 7.0, 7.0, 7.0, 7.0, 2.0]


def test_labels_are_matched_by_name_and_missing_ones_skipped(trained_run: dict, caplog):
    """A task with `berry` and `leaf` (other ids, no `stone`): the SDK's own mapper keeps the
    shapes of the shared classes under the task's ids and drops stone's, reporting it."""
    function = cvat_function.create(ckpt=trained_run["metrics"]["best_ckpt"], min_area=1)
    task_labels = [
        models.Label(id=101, name="berry", type="any", attributes=[], sublabels=[]),
        models.Label(id=102, name="leaf", type="mask", attributes=[], sublabels=[]),
    ]
    with caplog.at_level(logging.INFO):
        mapper = _AnnotationMapper(
            logging.getLogger("cvat"),
            function.spec.labels,
            task_labels,
            allow_unmatched_labels=True,
            conv_mask_to_poly=False,
        )
    assert "label 'stone' is not in dataset" in caplog.text
    labels = np.zeros((8, 8), np.int64)
    labels[0:2, 0:2], labels[4:6, 4:6], labels[6:8, 0:2] = 1, 2, 3  # leaf, stone, berry
    shapes, _ = cvat_function.regions_to_shapes(labels, [1, 2, 3], min_area=1)
    _, kept = mapper.validate_and_remap(shapes, ds_frame=7)
    assert sorted((s.label_id, s.frame) for s in kept) == [(101, 7), (102, 7)]
    with pytest.raises(cvataa.BadFunctionError, match="'stone' is not in dataset"):
        _AnnotationMapper(
            logging.getLogger("cvat"),
            function.spec.labels,
            task_labels,
            allow_unmatched_labels=False,
            conv_mask_to_poly=False,
        )


def test_create_refuses_bad_parameters(trained_run: dict):
    with pytest.raises(ConfigError, match="give one of ckpt"):
        cvat_function.create()
    with pytest.raises(ConfigError, match="mode='tiles'"):
        cvat_function.create(ckpt=trained_run["metrics"]["best_ckpt"], mode="tiles")


def test_cvat_cli_loads_the_module_with_its_parameters(trained_run: dict):
    """As `cvat-cli task auto-annotate ID --function-module seglab.cvat_function -p ...` does:
    the installed cvat-cli's own parameter parser and function loader."""
    common = pytest.importorskip("cvat_cli._internal.common")
    from cvat_cli._internal.parsers import parse_function_parameter

    ckpt = trained_run["metrics"]["best_ckpt"]
    given = [f"ckpt=str:{ckpt}", "min_area=int:4", "flip=bool:true", "mode=str:whole"]
    parameters = dict(parse_function_parameter(p) for p in given)
    function = common.FunctionLoader("seglab.cvat_function", None, parameters).load()
    assert isinstance(function, cvat_function.SegmentationFunction)
    assert function.min_area == 4 and function.predictor.flip and function.predictor.mode == "whole"
