"""The scan before training: images checked for truncation, corruption and size, splits for
images, and `seglab inspect` refusing exactly what training refuses."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from seglab.data.class_weights import pixel_counts, weights_from_counts
from seglab.data.datamodule import SegmentationDataModule
from seglab.data.dataset import build_decoder
from seglab.data.errors import DatasetError
from seglab.data.layouts import read_export
from seglab.data.scan import scan_export
from tests.exports import striped, to_rgb
from tests.problem_cases import CASES, base, image, mask, photo, truncate


def scan(root, **options) -> list[str]:
    export = read_export(root, **options)
    return scan_export(export, build_decoder(export)).problems


@pytest.mark.parametrize("name", CASES)
def test_inspect_and_training_agree_on_every_problem_case(name: str, tmp_path, capsys):
    """`seglab inspect` exits 0 exactly when the datamodule accepts the dataset, and both name
    the same problem."""
    case = CASES[name]
    path = case.build(tmp_path)
    options = [f"{key}={value}" for key, value in case.options.items()]
    code = main(["inspect", str(path), *options])
    printed = capsys.readouterr()
    assert code == case.exit_code, printed.out + printed.err
    assert case.message in printed.out + printed.err

    datamodule = SegmentationDataModule(str(path), num_workers=0, **case.options)
    if case.exit_code == 0:
        assert datamodule.export.splits == ["train", "val"]
        return
    with pytest.raises(DatasetError) as refused:
        datamodule.export  # noqa: B018 (the property reads and scans the dataset)
    assert case.message in str(refused.value)


def test_opencv_decodes_a_truncated_jpeg_silently_so_the_scan_must_catch_it(tmp_path):
    root = base(tmp_path)
    path = photo(image(root), 64, 64)
    Image.fromarray(to_rgb(striped(64, 64))).save(mask(root))
    truncate(path, 0.6)
    assert cv2.imread(str(path)) is not None  # what training would have trained on
    (problem,) = scan(root)
    assert problem.startswith(f"{path}: image file is truncated (")
    assert "copy the file again from its source, or re-export it from CVAT" in problem


def test_jpeg_with_padding_or_data_after_the_end_marker_is_accepted(tmp_path):
    """Cameras pad with zeros; phones' "motion photos" append a video after the marker."""
    root = base(tmp_path)
    path = image(root)
    complete = path.read_bytes()
    path.write_bytes(complete + bytes(300))
    assert scan(root) == []
    path.write_bytes(complete + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    assert scan(root) == []


def test_pixel_limit_is_configurable_and_names_the_file_and_tiling(tmp_path, monkeypatch):
    root = base(tmp_path)
    monkeypatch.setenv("SEGLAB_MAX_IMAGE_PIXELS", "20")
    problems = scan(root)
    assert len(problems) == 2  # both 5x6 images; masks are not read past the limit
    assert problems[0].startswith(f"{image(root)}: image is 5x6 = 30 px, over the limit of 20 px")
    assert "cut into tiles" in problems[0] and "raise SEGLAB_MAX_IMAGE_PIXELS" in problems[0]
    monkeypatch.setenv("SEGLAB_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(DatasetError, match="SEGLAB_MAX_IMAGE_PIXELS='many': give a positive"):
        scan(root)
    monkeypatch.setenv("SEGLAB_MAX_IMAGE_PIXELS", "30")
    assert scan(root) == []


def test_pillow_limit_is_restored_after_the_scan(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    scan(base(tmp_path))
    assert Image.MAX_IMAGE_PIXELS == before is not None


def test_grayscale_mask_message_says_so_and_how_to_fix(tmp_path):
    root = base(tmp_path)
    Image.fromarray((striped() > 0).astype(np.uint8) * 255).save(mask(root))
    (problem,) = scan(root)
    assert "1 class id value(s) not in the labelmap: 255 (20 px) in 1 mask(s)" in problem
    assert "The mask looks grayscale (one channel)" in problem
    assert "Save the masks as RGB PNGs in the labelmap's colours" in problem
    assert "classes.txt" in problem
    # The loader's message (a mask decoded outside the scan) says the same.
    export = read_export(root)
    with pytest.raises(DatasetError, match=r"a\.png: .*The mask looks grayscale"):
        build_decoder(export)(mask(root))


def test_empty_subset_file_is_noted_and_its_split_a_problem(tmp_path):
    root = base(tmp_path)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    export = read_export(root)
    assert any(note.endswith("val.txt: empty, lists no image") for note in export.notes)
    (problem,) = scan(root)
    assert problem.startswith(f"{root}: no 'val' images; the dataset has ['train']")


def test_datamodule_class_weights_come_from_the_scan_or_are_counted(tmp_path):
    root = base(tmp_path)
    Image.fromarray(to_rgb(striped(6, 5, n=2))).save(mask(root))
    datamodule = SegmentationDataModule(str(root), num_workers=0)
    train = datamodule.dataset("train")
    counts = pixel_counts(lambda i: train.load(i)[1], len(train), 3, 255)
    assert counts.tolist() == [15, 15, 0]
    for method in ("median", "inverse"):
        assert datamodule.class_weights(method) == weights_from_counts(counts, method)
    datamodule.scan_report = None
    assert datamodule.class_weights("auto") == weights_from_counts(counts, "auto") == [1, 1, 0]
    assert datamodule.class_weights("enet_if_rare") is None  # two classes of half each
    with pytest.raises(ValueError, match="loss.class_weights='often'"):
        datamodule.class_weights("often")
