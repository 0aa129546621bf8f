"""What `POST /predict` answers: a class-index PNG, a colour PNG, or JSON with per-class areas.

The PNGs are encoded as predict.py writes its `_index.png` and `_color.png` files (indices by
OpenCV, uint8 or uint16 past 255 classes; colours as an indexed PNG, `seglab.data.masks.color_png`),
so a client decodes the same masks from either.
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

from seglab.data.masks import color_png as encode_color_png
from seglab.prediction import ModelInfo

FORMATS = ("index", "color", "json")
MEDIA_TYPES = {"index": "image/png", "color": "image/png", "json": "application/json"}


def choose_format(requested: str | None, accept: str | None) -> str:
    """`format=` wins; else the Accept header (application/json -> json); else the index PNG."""
    if requested:
        if requested not in FORMATS:
            raise ValueError(f"format={requested!r}: choose one of {list(FORMATS)}")
        return requested
    if accept and "application/json" in accept and "image/png" not in accept:
        return "json"
    return "index"


def index_png(labels: np.ndarray) -> bytes:
    return _png(labels)


def color_png(labels: np.ndarray, info: ModelInfo) -> bytes:
    return encode_color_png(labels, info.colors)


def areas(labels: np.ndarray, info: ModelInfo) -> list[dict[str, Any]]:
    """Every class of the model in index order, with its predicted pixels and share."""
    counts = np.bincount(labels.ravel(), minlength=len(info.classes))
    total = max(int(labels.size), 1)
    return [
        {
            "index": i,
            "name": c["name"],
            "color": list(c["color"]),
            "pixels": int(counts[i]),
            "share": float(counts[i]) / total,
        }
        for i, c in enumerate(info.classes)
    ]


def json_body(
    labels: np.ndarray, info: ModelInfo, model: str, options: dict[str, Any], masks: bool
) -> dict[str, Any]:
    """The JSON answer; `masks` adds both PNGs as base64 (what the web page asks for)."""
    body: dict[str, Any] = {
        "model": model,
        "height": int(labels.shape[0]),
        "width": int(labels.shape[1]),
        **options,
        "classes": areas(labels, info),
    }
    if masks:
        body["index_png"] = base64.b64encode(index_png(labels)).decode("ascii")
        body["color_png"] = base64.b64encode(color_png(labels, info)).decode("ascii")
    return body


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise RuntimeError("OpenCV could not encode the mask as PNG")
    return encoded.tobytes()
