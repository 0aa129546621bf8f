"""The CVAT parser on hand-written exports: exact colour mapping, splits, and loud errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from seglab.data.cvat import DatasetError, SegClass, parse_labelmap, read_export, write_labelmap
from seglab.data.dataset import SegmentationDataset
from seglab.data.masks import ColorToIndex

CLASSES = (
    SegClass("background", (0, 0, 0)),
    SegClass("tool", (250, 50, 83)),
    SegClass("blood vessel", (51, 221, 255)),
)


def write_export(root: Path, items: dict[str, dict[str, np.ndarray]], classes=CLASSES) -> Path:
    """A CVAT export of `{split: {item_id: rgb_mask}}` with random images of the mask's size."""
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    write_labelmap(root / "labelmap.txt", classes)
    for split, masks in items.items():
        for item, mask in masks.items():
            for sub, ext, data in (
                ("JPEGImages", ".jpg", rng.integers(0, 255, mask.shape, np.uint8)),
                ("SegmentationClass", ".png", mask),
            ):
                path = root / sub / f"{item}{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), data[..., ::-1])
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(masks) + "\n")
    return root


def striped_mask(height: int = 6, width: int = 5) -> np.ndarray:
    """Rows cycle through the three class colours: row r has class r % 3."""
    mask = np.zeros((height, width, 3), np.uint8)
    for row in range(height):
        mask[row] = CLASSES[row % 3].color
    return mask


def test_labelmap_syntax(tmp_path: Path):
    path = tmp_path / "labelmap.txt"
    text = "# label:color_rgb:parts:actions\r\nbackground:0,0,0::\r\n\r\nvoie ferrée:10,20,30::\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert parse_labelmap(path) == (
        SegClass("background", (0, 0, 0)),
        SegClass("voie ferrée", (10, 20, 30)),
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("car:1,2,3:", "expected 4 ':'-separated fields"),
        ("car:1,2::", "bad colour '1,2'"),
        ("car:1,2,300::", "bad colour '1,2,300'"),
        ("background:9,9,9::", "duplicate label name 'background' (first on line 2)"),
        ("car:0,0,0::", "reuses colour (0, 0, 0) of line 2"),
    ],
)
def test_labelmap_errors_name_the_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "labelmap.txt"
    path.write_text(f"# label:color_rgb:parts:actions\nbackground:0,0,0::\n{line}\n")
    with pytest.raises(DatasetError, match=r"labelmap\.txt:3: ") as err:
        parse_labelmap(path)
    assert message in str(err.value)


def test_export_maps_colours_exactly_and_keeps_splits(tmp_path: Path):
    root = write_export(
        tmp_path / "export",
        {
            "train": {"a": striped_mask(), "sub dir/b c": striped_mask(4, 7)},
            "val": {"d": striped_mask(3, 3)},
        },
    )
    export = read_export(root)
    assert export.class_names == ["background", "tool", "blood vessel"]
    assert export.splits == ["train", "val"]
    assert [s.id for s in export.split("train")] == ["a", "sub dir/b c"]
    dataset = SegmentationDataset(export.split("train"), export.classes, transform=None)
    for i, (height, width) in enumerate([(6, 5), (4, 7)]):
        image, mask = dataset.load(i)
        expected = np.repeat((np.arange(height) % 3)[:, None], width, axis=1)
        assert image.shape == (height, width, 3)
        np.testing.assert_array_equal(mask, expected)


def test_unknown_colour_names_file_colour_and_count(tmp_path: Path):
    mask = striped_mask()
    mask[0, :2] = (1, 2, 3)  # two pixels of a colour the labelmap lacks
    root = write_export(tmp_path / "export", {"train": {"a": mask}})
    dataset = SegmentationDataset(read_export(root).split("train"), CLASSES, transform=None)
    with pytest.raises(
        DatasetError,
        match=r"SegmentationClass/a\.png: 1 colour\(s\) not in labelmap"
        r"\.txt: \(1, 2, 3\) \(2 px\)",
    ):
        dataset.load(0)


def test_missing_mask_is_an_error_naming_the_file(tmp_path: Path):
    root = write_export(tmp_path / "export", {"train": {"a": striped_mask(), "b": striped_mask()}})
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"SegmentationClass/b\.png: mask missing for item 'b'"):
        read_export(root)


def test_missing_image_and_missing_images_folder(tmp_path: Path):
    root = write_export(tmp_path / "export", {"train": {"a": striped_mask(), "b": striped_mask()}})
    (root / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"train\.txt:2: no image for item 'b'"):
        read_export(root)
    images = tmp_path / "originals"
    (root / "JPEGImages").rename(images)
    with pytest.raises(DatasetError, match="made without images.*data.images_dir"):
        read_export(root)
    cv2.imwrite(str(images / "b.png"), np.zeros((6, 5, 3), np.uint8))
    assert len(read_export(root, images_dir=images).samples) == 2


def test_size_mismatch_and_corrupt_mask(tmp_path: Path):
    root = write_export(tmp_path / "export", {"train": {"a": striped_mask(), "b": striped_mask()}})
    cv2.imwrite(str(root / "SegmentationClass" / "a.png"), striped_mask(8, 5)[..., ::-1])
    (root / "SegmentationClass" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dataset = SegmentationDataset(read_export(root).split("train"), CLASSES, transform=None)
    with pytest.raises(DatasetError, match=r"a\.png: mask is 5x8 but image .*a\.jpg is 5x6"):
        dataset.load(0)
    with pytest.raises(DatasetError, match=r"b\.png: cannot read mask"):
        dataset.load(1)


def test_item_in_two_subsets_is_refused(tmp_path: Path):
    root = write_export(
        tmp_path / "export", {"train": {"a": striped_mask()}, "val": {"a": striped_mask()}}
    )
    with pytest.raises(DatasetError, match="already in subset 'train'"):
        read_export(root)


def test_missing_labelmap_gives_the_hint(tmp_path: Path):
    root = write_export(tmp_path / "export", {"train": {"a": striped_mask()}})
    (root / "labelmap.txt").unlink()
    with pytest.raises(DatasetError, match="data.labelmap"):
        read_export(root)


def test_colour_lookup_is_exact_for_near_colours():
    lookup = ColorToIndex([(0, 0, 0), (0, 0, 1), (1, 0, 0)])
    rgb = np.array([[[0, 0, 1], [1, 0, 0], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(lookup(rgb), [[1, 2, 0]])
    with pytest.raises(DatasetError, match=r"\(0, 1, 0\) \(1 px\)"):
        lookup(np.array([[[0, 1, 0]]], np.uint8))
