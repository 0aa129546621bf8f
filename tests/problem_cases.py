"""Every way a dataset in the suite goes wrong, as small real files: each case is one broken
dataset with the exit code `seglab inspect` must give (1: problems listed, 2: unreadable) and a
fragment of its message. `test_scan.py` runs each through inspect and through the datamodule."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from tests.exports import striped, to_rgb, write_cvat


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]  # writes the dataset under the given folder, returns data.path
    exit_code: int  # what `seglab inspect` returns
    message: str  # a fragment of the problem or error it prints
    options: dict[str, Any] = field(default_factory=dict)  # data.* keys


def base(tmp: Path) -> Path:
    return write_cvat(tmp / "e", {"train": {"a": striped()}, "val": {"b": striped()}})


def image(root: Path, item: str = "a") -> Path:
    return root / "JPEGImages" / f"{item}.jpg"


def mask(root: Path, item: str = "a") -> Path:
    return root / "SegmentationClass" / f"{item}.png"


def edit(change: Callable[[Path], object]) -> Callable[[Path], Path]:
    """A builder: the base export, then `change(root)`."""

    def build(tmp: Path) -> Path:
        root = base(tmp)
        change(root)
        return root

    return build


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def photo(path: Path, height: int = 6, width: int = 5, ext: str = ".jpg") -> Path:
    """A noise image (incompressible, so cutting it loses pixels) replacing `path`."""
    path.unlink(missing_ok=True)
    target = path.with_suffix(ext)
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(target), rng.integers(0, 255, (height, width, 3), np.uint8))
    return target


def huge_png(path: Path, side: int = 20000) -> Path:
    """A valid side x side 1-bit PNG of a few KB: 400 Mpx for side 20000, past Pillow's
    DecompressionBombError threshold (179 Mpx)."""
    row = bytes(1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def swap_image(root: Path, new: Path) -> None:
    """Point the item at a new image file (another extension)."""
    for old in (root / "JPEGImages").glob("a.*"):
        if old != new:
            old.unlink()


def _grayscale_mask(root: Path) -> None:
    Image.fromarray((striped() > 0).astype(np.uint8) * 255).save(mask(root))


def _unknown_colour(root: Path) -> None:
    rgb = to_rgb(striped())
    rgb[0, 0] = (7, 7, 7)
    Image.fromarray(rgb).save(mask(root))


def _truncated_jpeg(root: Path) -> None:
    """Large enough that the cut falls in the pixel data, not the header; same size as its
    mask, so nothing but the truncation is wrong."""
    truncate(photo(image(root), 64, 64), 0.6)
    Image.fromarray(to_rgb(striped(64, 64))).save(mask(root))


def _truncated_png_image(root: Path) -> None:
    new = photo(image(root), 6, 5, ".png")
    swap_image(root, new)
    truncate(new)


def _truncated_bmp(root: Path) -> None:
    new = photo(image(root), 6, 5, ".bmp")
    swap_image(root, new)
    truncate(new, 0.8)


def _huge_image(root: Path) -> None:
    swap_image(root, huge_png(image(root).with_suffix(".png")))


def _empty_subset(name: str) -> Callable[[Path], object]:
    return lambda root: (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("")


def _latin1_labelmap(root: Path) -> None:
    text = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nvoie ferrée:250,50,83::\n"
    (root / "labelmap.txt").write_bytes(text.encode("latin-1"))


CASES: dict[str, Case] = {
    "ok": Case(base, 0, "OK: training can use this dataset."),
    "unknown colour": Case(edit(_unknown_colour), 1, "(7, 7, 7) (1 px) in 1 mask(s)"),
    "mask size differs": Case(
        edit(lambda r: Image.fromarray(to_rgb(striped(8, 5))).save(mask(r))),
        1,
        "a.png: mask is 5x8 but image",
    ),
    "grayscale mask in a colour export": Case(edit(_grayscale_mask), 1, "looks grayscale"),
    "corrupt mask": Case(
        edit(lambda r: mask(r).write_bytes(b"\x89PNG\r\n\x1a\n truncated")), 1, "cannot read mask"
    ),
    "16-bit RGB mask": Case(
        edit(lambda r: cv2.imwrite(str(mask(r)), np.zeros((6, 5, 3), np.uint16))),
        1,
        "16-bit RGB mask",
    ),
    "truncated JPEG": Case(edit(_truncated_jpeg), 1, "a.jpg: image file is truncated"),
    "truncated PNG image": Case(edit(_truncated_png_image), 1, "a.png: image file is truncated"),
    "truncated BMP image": Case(edit(_truncated_bmp), 1, "a.bmp: image file is truncated"),
    "not an image": Case(
        edit(lambda r: image(r).write_bytes(b"<html>404</html>")), 1, "a.jpg: cannot read image"
    ),
    "20000x20000 image": Case(edit(_huge_image), 1, "a.png: image is 20000x20000 = 400 Mpx"),
    "empty val subset": Case(edit(_empty_subset("val")), 1, "no 'val' images"),
    "empty train subset": Case(edit(_empty_subset("train")), 1, "no 'train' images"),
    "missing mask": Case(edit(lambda r: mask(r).unlink()), 2, "have no mask"),
    "non-UTF-8 labelmap": Case(
        edit(_latin1_labelmap), 2, "labelmap.txt: the labelmap is not UTF-8"
    ),
    "no labelmap": Case(edit(lambda r: (r / "labelmap.txt").unlink()), 2, "no labelmap.txt"),
    "unknown subset": Case(
        edit(
            lambda r: (r / "ImageSets/Segmentation/val.txt").rename(
                r / "ImageSets/Segmentation/b2.txt"
            )
        ),
        2,
        "unknown subset 'b2'",
    ),
    "item outside the export": Case(
        edit(lambda r: (r / "ImageSets/Segmentation/val.txt").write_text("../../etc/passwd\n")),
        2,
        "points outside the export",
    ),
}
