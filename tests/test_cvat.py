"""Reading datasets as users bring them: layouts, labelmaps, splits, and loud errors."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seglab.data.cvat_writer import write_labelmap
from seglab.data.dataset import SegmentationDataset, build_decoder
from seglab.data.errors import DatasetError
from seglab.data.labelmap import SegClass, parse_labelmap
from seglab.data.layouts import read_export
from seglab.data.transforms import build_eval_transform
from tests.exports import CLASSES, save_image, save_rgb, striped, to_rgb, write_cvat, write_folders


def load_all(export, split: str, **decoder_kwargs) -> list[np.ndarray]:
    dataset = SegmentationDataset(
        export.split(split), build_decoder(export, **decoder_kwargs), None, export.background_index
    )
    return [dataset.load(i)[1] for i in range(len(dataset))]


# ---------------------------------------------------------------- labelmap.txt


def test_labelmap_syntax(tmp_path: Path):
    path = tmp_path / "labelmap.txt"
    text = (
        "# label:color_rgb:parts:actions\r\nbackground:0,0,0::\r\n\r\n"
        "voie ferrée:10,20,30::\r\nforest_land:0,255,0:: #green\r\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert parse_labelmap(path) == (
        SegClass("background", (0, 0, 0)),
        SegClass("voie ferrée", (10, 20, 30)),
        SegClass("forest_land", (0, 255, 0)),
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("car:1,2,3:", "expected 4 ':'-separated fields"),
        ("a:b:1,2,3::", "expected 4 ':'-separated fields"),
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


@pytest.mark.parametrize(
    ("encoding", "found"),
    [("latin-1", "byte 0xe9 on line 3"), ("utf-16", "byte 0xff on line 1")],
)
def test_labelmap_in_another_encoding_is_named(tmp_path: Path, encoding: str, found: str):
    text = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nvoie ferrée:10,20,30::\n"
    path = tmp_path / "labelmap.txt"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(DatasetError) as err:
        parse_labelmap(path)
    assert str(err.value) == (
        f"{path}: the labelmap is not UTF-8 text ({found}); save it as UTF-8 (CVAT's exports "
        "are UTF-8)"
    )


def test_subset_list_and_classes_txt_in_another_encoding_are_named(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}})
    (root / "ImageSets" / "Segmentation" / "train.txt").write_bytes("é\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"train\.txt: the subset list is not UTF-8 text"):
        read_export(root)
    folders = write_folders(tmp_path / "ds", {"": {"a": striped()}}, index_masks=True)
    (folders / "classes.txt").write_bytes("fond\nfissuré\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"classes\.txt: the class list is not UTF-8 text"):
        read_export(folders)


def test_class_order_pins_indices_and_background_need_not_be_first_or_black(tmp_path: Path):
    classes = (SegClass("car", (10, 10, 10)), SegClass("background", (97, 35, 35)))
    root = write_cvat(tmp_path / "e", {"train": {"a": striped(n=2)}}, classes)
    export = read_export(root)
    assert export.class_names == ["car", "background"] and export.background_index == 1
    np.testing.assert_array_equal(load_all(export, "train")[0], striped(n=2))
    pinned = read_export(root, class_order=["background", "car"])
    np.testing.assert_array_equal(load_all(pinned, "train")[0], 1 - striped(n=2))
    with pytest.raises(
        DatasetError, match=r"missing \['car'\], not in the labelmap or ignored \['bus'\]"
    ):
        read_export(root, class_order=["background", "bus"])


def test_ignore_classes_become_ignore_index(tmp_path: Path):
    classes = (*CLASSES, SegClass("void", (224, 224, 192)))
    root = write_cvat(tmp_path / "e", {"train": {"a": striped(8, 3, n=4)}}, classes)
    export = read_export(root, ignore_classes=["void"])
    assert export.class_names == ["background", "tool", "blood vessel"]
    expected = striped(8, 3, n=4)
    expected[expected == 3] = 255
    np.testing.assert_array_equal(load_all(export, "train")[0], expected)
    with pytest.raises(DatasetError, match=r"data.ignore_classes names \['Void'\]"):
        read_export(root, ignore_classes=["Void"])


def test_more_than_255_classes_use_wide_masks(tmp_path: Path):
    classes = tuple(SegClass(f"c{i}", (i // 256, i % 256, 7)) for i in range(300))
    index = np.arange(300, dtype=np.uint16).reshape(15, 20)
    root = tmp_path / "e"
    write_cvat(root, {"train": {"a": np.zeros((15, 20), np.uint8)}}, classes)
    save_rgb(
        root / "SegmentationClass" / "a.png",
        np.asarray([c.color for c in classes], np.uint8)[index],
    )
    export = read_export(root)
    assert any("300 labels" in note for note in export.notes)
    with pytest.raises(DatasetError, match="ignore_index=255 collides with the 300 class ids"):
        load_all(export, "train")
    np.testing.assert_array_equal(load_all(export, "train", ignore_index=65535)[0], index)
    # Through the training path: uint16 masks are batched, and widened on the device.
    dataset = SegmentationDataset(
        export.split("train"), build_decoder(export, 65535), build_eval_transform((15, 20))
    )
    (batch,) = DataLoader(dataset, batch_size=1)
    assert batch["image"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint16
    np.testing.assert_array_equal(batch["mask"][0].long().numpy(), index)


# ---------------------------------------------------------------- the CVAT layout


def test_cvat_export_maps_colours_exactly_and_keeps_splits(tmp_path: Path):
    root = write_cvat(
        tmp_path / "export",
        {
            "Train": {"a": striped(), "sub dir/b c": striped(4, 7)},
            "Validation": {"d": striped(3, 3)},
        },
    )
    (root / "ImageSets" / "Segmentation" / "my_extra_test.txt").write_text("")  # empty, with "_"
    export = read_export(root, subset_map={"my_extra_test": "test"})
    assert export.layout == "cvat"
    assert export.class_names == ["background", "tool", "blood vessel"]
    assert export.splits == ["train", "val"]
    assert [s.id for s in export.split("train")] == ["a", "sub dir/b c"]
    masks = load_all(export, "train")
    np.testing.assert_array_equal(masks[0], striped())
    np.testing.assert_array_equal(masks[1], striped(4, 7))


def test_image_extensions_in_any_case(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"frame_000000": striped()}}, image_ext=".PNG")
    save_image(root / "JPEGImages" / "b.tif", 6, 5)
    save_rgb(root / "SegmentationClass" / "b.png", to_rgb(striped()))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("frame_000000\nb\n")
    export = read_export(root, val_fraction=0.5)
    assert sorted(s.image.name for s in export.samples) == ["b.tif", "frame_000000.PNG"]


def test_two_images_for_one_item_is_an_error(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}})
    save_image(root / "JPEGImages" / "a.png", 6, 5)
    with pytest.raises(DatasetError, match=r"two files for item 'a': a\.jpg and a\.png"):
        read_export(root)


def test_unknown_subset_names_the_known_ones_and_subset_map(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"batch2": {"a": striped()}})
    with pytest.raises(
        DatasetError, match=r"unknown subset 'batch2'.*data.subset_map=\{batch2: train\}"
    ):
        read_export(root)
    assert read_export(root, subset_map={"batch2": "val"}).splits == ["val"]


def test_default_subset_gets_a_seeded_reproducible_val_split(tmp_path: Path):
    items = {f"f{i:02d}": striped() for i in range(10)}
    root = write_cvat(tmp_path / "e", {"default": items})
    first = read_export(root, val_fraction=0.3, split_seed=1)
    again = read_export(root, val_fraction=0.3, split_seed=1)
    other = read_export(root, val_fraction=0.3, split_seed=2)
    val = [s.id for s in first.split("val")]
    assert len(val) == 3 and len(first.split("train")) == 7
    assert val == [s.id for s in again.split("val")] != [s.id for s in other.split("val")]
    assert any("held out 3 of 10" in note for note in first.notes)


def test_item_id_escaping_the_export_is_refused(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}})
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n../../etc/passwd\n")
    with pytest.raises(
        DatasetError, match=r"train\.txt:2: item id '\.\./\.\./etc/passwd' points outside"
    ):
        read_export(root)


def test_item_in_two_subsets_is_refused(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}, "val": {"a": striped()}})
    with pytest.raises(DatasetError, match="already in subset 'train'"):
        read_export(root)


def test_missing_masks_error_background_or_skip(tmp_path: Path):
    root = write_cvat(
        tmp_path / "e", {"train": {"a": striped(), "b": striped()}, "val": {"c": striped()}}
    )
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"1 listed image\(s\) have no mask: b\. .*missing_masks=background.*=skip",
    ):
        read_export(root)
    export = read_export(root, missing_masks="background")
    np.testing.assert_array_equal(load_all(export, "train")[1], np.zeros((6, 5)))
    skipped = read_export(root, missing_masks="skip")
    assert [s.id for s in skipped.split("train")] == ["a"]
    assert any("skipped 1 image(s) without a mask" in n for n in skipped.notes)


def test_unlisted_files_are_reported_not_used(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}, "val": {"c": striped()}})
    save_image(root / "JPEGImages" / "stray.jpg", 6, 5)
    export = read_export(root)
    assert len(export.samples) == 2
    assert any("1 images listed in no subset, not used: stray" in n for n in export.notes)


def test_export_without_images_takes_images_dir(tmp_path: Path):
    root = write_cvat(tmp_path / "export", {"train": {"a": striped()}})
    images = tmp_path / "originals"
    (root / "JPEGImages").rename(images)
    with pytest.raises(DatasetError, match="made without images.*data.images_dir"):
        read_export(root)
    assert read_export(root, images_dir=images, val_fraction=0.5).samples[0].image.parent == images


def test_missing_labelmap_gives_the_hint(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}})
    (root / "labelmap.txt").rename(tmp_path / "elsewhere.txt")
    with pytest.raises(DatasetError, match="no labelmap.txt.*data.labelmap"):
        read_export(root)
    assert (
        read_export(root, labelmap=tmp_path / "elsewhere.txt", val_fraction=0.5).class_names[1]
        == "tool"
    )


# ---------------------------------------------------------------- folder layouts and zips


def test_split_folders_with_labelmap(tmp_path: Path):
    root = write_folders(
        tmp_path / "ds", {"train": {"x/a": striped()}, "val": {"b": striped(4, 4)}}
    )
    export = read_export(root)
    assert export.layout == "split" and export.splits == ["train", "val"]
    assert [s.id for s in export.split("train")] == ["train/x/a"]
    np.testing.assert_array_equal(load_all(export, "val")[0], striped(4, 4))


def test_macos_copies_in_folders_are_no_samples_and_are_reported(tmp_path: Path):
    """A folder copied on a Mac gains `._a.jpg` resource forks and `__MACOSX/`: not samples."""
    root = write_folders(tmp_path / "ds", {"train": {"a": striped()}, "val": {"b": striped()}})
    for junk in ("images/train/._a.jpg", "masks/train/._a.png", "images/__MACOSX/val/b.jpg"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    export = read_export(root)
    assert [s.id for s in export.samples] == ["train/a", "val/b"]
    (note,) = [n for n in export.notes if "hidden files" in n]
    assert note.startswith(f"{root}: 3 hidden files") and "images/train/._a.jpg" in note


def test_index_masks_named_by_classes_txt_or_config(tmp_path: Path):
    root = write_folders(
        tmp_path / "ds", {"": {f"i{k}": striped() for k in range(5)}}, index_masks=True
    )
    with pytest.raises(DatasetError, match="no labelmap.txt and no classes.txt.*data.classes"):
        read_export(root)
    export = read_export(root, classes=["bg", "crack", "rust"], val_fraction=0.4)
    assert export.layout == "index" and export.class_names == ["bg", "crack", "rust"]
    assert len(export.split("val")) == 2
    np.testing.assert_array_equal(load_all(export, "train")[0], striped())
    (root / "classes.txt").write_text("bg\ncrack\n")
    with pytest.raises(
        DatasetError, match=r"1 class id value\(s\) not in the labelmap: 2 \(10 px\)"
    ):
        load_all(read_export(root), "train")


def test_zip_and_folder_give_identical_samples_and_masks(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = write_cvat(
        tmp_path / "src" / "outer" / "inner",
        {"train": {"a": striped()}, "val": {"b": striped(4, 4)}},
    )
    archive = Path(shutil.make_archive(str(tmp_path / "export"), "zip", tmp_path / "src"))
    from_zip, from_dir = read_export(archive), read_export(root)
    assert [(s.id, s.split) for s in from_zip.samples] == [
        (s.id, s.split) for s in from_dir.samples
    ]
    for split in ("train", "val"):
        for a, b in zip(load_all(from_zip, split), load_all(from_dir, split), strict=True):
            np.testing.assert_array_equal(a, b)

    shutil.copytree(root, tmp_path / "src" / "outer" / "second")
    two = Path(shutil.make_archive(str(tmp_path / "two"), "zip", tmp_path / "src"))
    with pytest.raises(DatasetError, match="holds 2 datasets"):
        read_export(two)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil/labelmap.txt", "x")
    with pytest.raises(DatasetError, match="would unpack outside"):
        read_export(bad)


def test_index_to_colour_round_trip_is_exact_for_every_class(tmp_path: Path):
    rng = np.random.default_rng(0)
    classes = tuple(
        SegClass(f"class {i}", tuple(int(v) for v in rng.integers(0, 256, 3))) for i in range(40)
    )
    index = rng.integers(0, 40, (32, 48)).astype(np.uint8)
    root = write_cvat(tmp_path / "e", {"train": {"a": index}, "val": {"b": index[:8]}}, classes)
    np.testing.assert_array_equal(load_all(read_export(root), "train")[0], index)


def test_write_labelmap_round_trips(tmp_path: Path):
    write_labelmap(tmp_path / "labelmap.txt", CLASSES)
    assert parse_labelmap(tmp_path / "labelmap.txt") == CLASSES
