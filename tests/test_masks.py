"""Mask decoding: every PNG kind CVAT and other tools write, and every way it can be wrong."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seglab.data.dataset import SegmentationDataset, build_decoder
from seglab.data.errors import DatasetError
from seglab.data.layouts import read_export
from seglab.data.masks import color_png, colorize
from seglab.data.scan import raise_on_problems, scan_export
from tests.exports import CLASSES, striped, to_rgb, write_cvat

MASK = striped()


@pytest.fixture
def export_root(tmp_path: Path) -> Path:
    return write_cvat(tmp_path / "e", {"train": {"a": MASK}, "val": {"b": MASK}})


def decode(root: Path, **kwargs) -> np.ndarray:
    export = read_export(root)
    return build_decoder(export, **kwargs)(export.split("train")[0].mask)


def mask_path(root: Path) -> Path:
    return root / "SegmentationClass" / "a.png"


def test_rgba_with_opaque_alpha(export_root: Path):
    rgba = np.dstack([to_rgb(MASK), np.full(MASK.shape, 255, np.uint8)])
    Image.fromarray(rgba).save(mask_path(export_root))
    np.testing.assert_array_equal(decode(export_root), MASK)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(mask_path(export_root))
    with pytest.raises(DatasetError, match=r"a\.png: RGBA mask with 1 transparent pixel"):
        decode(export_root)


def test_palette_png_maps_through_its_palette_colours(export_root: Path):
    # Palette index i holds the colour of class 2 - i: raw indices would give the wrong classes.
    palette = [v for c in reversed(CLASSES) for v in c.color]
    image = Image.fromarray((2 - MASK).astype(np.uint8), mode="P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(mask_path(export_root), transparency=0)  # a transparent entry is fine in a palette
    np.testing.assert_array_equal(decode(export_root), MASK)


def test_grayscale_mask_holds_labelmap_indices(export_root: Path):
    Image.fromarray(MASK).save(mask_path(export_root))
    np.testing.assert_array_equal(decode(export_root), MASK)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: cv2.imwrite(str(p), np.zeros((6, 5, 3), np.uint16)), "16-bit RGB mask"),
        (lambda p: Image.fromarray(np.zeros((6, 5, 2), np.uint8), mode="LA").save(p), "mode 'LA'"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n truncated"), "cannot read mask"),
    ],
)
def test_odd_mask_files_are_errors_naming_the_mode(export_root: Path, write, message: str):
    write(mask_path(export_root))
    with pytest.raises(DatasetError, match=rf"a\.png: .*{message}"):
        decode(export_root)


def test_unknown_colour_error_or_ignore(export_root: Path):
    rgb = to_rgb(MASK)
    rgb[0, :2] = (1, 2, 3)
    Image.fromarray(rgb).save(mask_path(export_root))
    with pytest.raises(
        DatasetError,
        match=r"a\.png: 1 colour\(s\) not in the labelmap: \(1, 2, 3\) \(2 px\)"
        r".*unknown_colors=ignore",
    ):
        decode(export_root)
    expected = MASK.copy()
    expected[0, :2] = 255
    np.testing.assert_array_equal(decode(export_root, unknown_colors="ignore"), expected)


def test_scan_lists_every_problem_at_once_and_counts_pixels(export_root: Path):
    rgb = to_rgb(MASK)
    rgb[0, 0] = (9, 9, 9)
    Image.fromarray(rgb).save(mask_path(export_root))
    Image.fromarray(to_rgb(striped(8, 5))).save(export_root / "SegmentationClass" / "b.png")
    export = read_export(export_root)
    report = scan_export(export, build_decoder(export))
    assert len(report.problems) == 2
    with pytest.raises(
        DatasetError,
        match=r"(?s)2 problem\(s\).*b\.png: mask is 5x8 but image .*b\.jpg is 5x6"
        r".*\(9, 9, 9\) \(1 px\) in 1 mask\(s\)",
    ):
        raise_on_problems(report)

    ignored = scan_export(export, build_decoder(export, unknown_colors="ignore"))
    assert ignored.unknown == {(9, 9, 9): [1, 1]}
    assert ignored.pixels["train"].tolist() == [9, 10, 10]  # one background pixel was (9, 9, 9)


def test_dataset_refuses_size_mismatch(export_root: Path):
    Image.fromarray(to_rgb(striped(8, 5))).save(mask_path(export_root))
    export = read_export(export_root)
    dataset = SegmentationDataset(export.split("train"), build_decoder(export), None)
    with pytest.raises(DatasetError, match=r"a\.png: mask is 5x8 but image .*a\.jpg is 5x6"):
        dataset.load(0)


def test_exif_rotated_image_pairs_with_the_mask_as_cvat_shows_it(export_root: Path):
    """A phone photo stored 6 wide x 5 high with EXIF 'rotate 90°' is shown, annotated and
    decoded 5 wide x 6 high; scan and loader must both accept its 5x6 mask and refuse a 6x5 one."""
    image = export_root / "JPEGImages" / "a.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(image, exif=exif)
    export = read_export(export_root)
    decoder = build_decoder(export)
    dataset = SegmentationDataset(export.split("train"), decoder, None)
    assert scan_export(export, decoder).problems == []
    assert dataset.load(0)[0].shape[:2] == MASK.shape == (6, 5)

    Image.fromarray(to_rgb(striped(5, 6))).save(mask_path(export_root))
    assert "a.png: mask is 6x5 but image" in scan_export(export, decoder).problems[0]
    with pytest.raises(DatasetError, match=r"a\.png: mask is 6x5"):
        dataset.load(0)


def test_colour_png_is_indexed_and_reads_back_as_the_classes(export_root: Path):
    """predict.py's and the server's `_color.png`: a palette PNG whose RGB is the labelmap's,
    read by OpenCV and Pillow as `colorize` paints it and by seglab as the same classes (a
    prediction can go back into a training export)."""
    colors = [c.color for c in CLASSES]
    encoded = color_png(MASK, colors)
    assert Image.open(io.BytesIO(encoded)).mode == "P"
    by_opencv = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(by_opencv[..., ::-1], colorize(MASK, colors))
    mask_path(export_root).write_bytes(encoded)
    np.testing.assert_array_equal(decode(export_root), MASK)


def test_colour_png_past_256_classes_is_rgb():
    colors = [(i % 256, i // 256, 7) for i in range(300)]
    labels = np.arange(300, dtype=np.uint16).reshape(15, 20)
    encoded = color_png(labels, colors)
    image = Image.open(io.BytesIO(encoded))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), colorize(labels, colors))
