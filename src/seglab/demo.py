"""Write a small, deterministic, learnable CVAT "Segmentation Mask 1.1" export for the quickstart.

The scenes imitate a field seen from above: leaves, stones and berries of varied shape, size,
colour and texture scattered over noisy soil with twigs. Each class has its own look, so a model
trained from scratch on a CPU learns it in minutes, yet no class is one flat colour.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from seglab.data.cvat_writer import CvatWriter
from seglab.data.labelmap import SegClass

DEMO_CLASSES = (
    SegClass("background", (0, 0, 0)),
    SegClass("leaf", (51, 221, 255)),
    SegClass("stone", (250, 50, 83)),
    SegClass("berry", (52, 209, 183)),
)
DEMO_SPLITS = {"train": 96, "val": 24, "test": 12}


def write_demo_export(
    path: str | Path, size: int = 128, seed: int = 0, splits: dict[str, int] | None = None
) -> Path:
    """Write the export to `path` (which must not exist yet) and return it."""
    splits = dict(DEMO_SPLITS if splits is None else splits)
    rng = np.random.default_rng(seed)
    index = 0
    with CvatWriter(path, DEMO_CLASSES) as writer:
        for split, count in splits.items():
            for _ in range(count):
                image, classes, instances = render_scene(rng, size)
                ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
                assert ok, "OpenCV could not encode a JPEG"
                writer.add(
                    f"field_{index:04d}", classes, instances, split, (jpeg.tobytes(), ".jpg")
                )
                index += 1
    return Path(path)


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One RGB image with its class-index and instance-index masks."""
    image = _soil(rng, size)
    classes = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    for instance in range(1, int(rng.integers(4, 10)) + 1):
        cls = int(rng.integers(1, len(DEMO_CLASSES)))
        shape = _SHAPES[cls](rng, size)
        image[shape] = _TEXTURES[cls](rng, size)[shape]
        classes[shape] = cls
        instances[shape] = instance
    image = cv2.GaussianBlur(image, (3, 3), 0)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), classes, instances


def _soil(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array([rng.uniform(90, 140), rng.uniform(60, 95), rng.uniform(30, 60)])
    blotches = cv2.resize(rng.normal(0, 18, (6, 6, 1)).astype(np.float32), (size, size))
    image = base + blotches[..., None] + rng.normal(0, 10, (size, size, 3))
    for _ in range(int(rng.integers(2, 6))):  # twigs: thin dark lines that are still background
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        shade = tuple(float(v) for v in base * rng.uniform(0.3, 0.6))
        cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), shade, int(rng.integers(1, 3)))
    return image.astype(np.float32)


def _canvas(size: int) -> np.ndarray:
    return np.zeros((size, size), np.uint8)


def _leaf_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    canvas, center = _canvas(size), tuple(int(v) for v in rng.integers(0, size, 2))
    length = int(rng.uniform(0.08, 0.22) * size)
    width = max(3, int(length / rng.uniform(2.0, 3.5)))
    cv2.ellipse(canvas, center, (length, width), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return canvas.astype(bool)


def _stone_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    canvas, center = _canvas(size), rng.integers(0, size, 2)
    radius = rng.uniform(0.05, 0.16) * size
    n = int(rng.integers(6, 11))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.7, 1.2, n)
    points = center + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    cv2.fillPoly(canvas, [points.astype(np.int32)], 1)
    return canvas.astype(bool)


def _berry_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    canvas, center = _canvas(size), tuple(int(v) for v in rng.integers(0, size, 2))
    cv2.circle(canvas, center, int(rng.uniform(0.03, 0.09) * size), 1, -1)
    return canvas.astype(bool)


def _leaf_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    green = np.array([rng.uniform(40, 120), rng.uniform(130, 210), rng.uniform(20, 70)])
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    veins = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.5, 0.9))
    return green + 18 * veins[..., None]


def _stone_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = rng.uniform(110, 200)
    tint = rng.uniform(-10, 10, 3)
    speckle = rng.normal(0, 22, (size, size, 1))
    return grey + tint + speckle


def _berry_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    hues = (np.array([200, 30, 50]), np.array([120, 20, 110]), np.array([60, 30, 150]))
    color = hues[int(rng.integers(len(hues)))] * rng.uniform(0.8, 1.2)
    shine = cv2.resize(rng.uniform(0, 1, (4, 4)).astype(np.float32), (size, size))
    return color + 40 * shine[..., None]


_SHAPES = {1: _leaf_shape, 2: _stone_shape, 3: _berry_shape}
_TEXTURES = {1: _leaf_texture, 2: _stone_texture, 3: _berry_texture}
