"""Round trips checked by the format library behind CVAT's "Segmentation mask 1.1" import and
export: Datumaro's `voc_segmentation` importer and exporter."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

dm = pytest.importorskip("datumaro")

from seglab.data.cvat_writer import CvatWriter  # noqa: E402
from seglab.data.dataset import build_decoder  # noqa: E402
from seglab.data.labelmap import SegClass  # noqa: E402
from seglab.data.layouts import read_export  # noqa: E402
from seglab.prediction.run import run as predict_run  # noqa: E402
from tests.helpers import compose_predict  # noqa: E402

CLASSES = [
    SegClass("background", (0, 0, 0)),
    SegClass("leaf", (51, 221, 255)),
    SegClass("stone", (250, 50, 83)),
]


def import_with_datumaro(archive: Path, tmp_path: Path) -> tuple[dict[str, np.ndarray], list]:
    """Each item's class-index mask as Datumaro's importer reads it (0 where no mask)."""
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(archive).extractall(folder)
    dataset = dm.Dataset.import_from(str(folder), "voc_segmentation")
    names = [label.name for label in dataset.categories()[dm.AnnotationType.label]]
    masks = {}
    for item in dataset:
        shape = item.annotations[0].image.shape if item.annotations else None
        labels = np.zeros(shape, np.int64) if shape else None
        for annotation in item.annotations:
            assert not labels[annotation.image].any(), "instances overlap"
            labels[annotation.image] = annotation.label
        masks[item.id] = (labels, len(item.annotations))
    return masks, names


def test_predict_cvat_zip_imports_into_exactly_the_predicted_masks(
    trained_run: dict, tmp_path: Path
):
    frames = trained_run["export"] / "JPEGImages"
    out = tmp_path / "out"
    summary = predict_run(
        compose_predict(
            [
                f"ckpt={trained_run['metrics']['best_ckpt']}",
                f"input={frames}",
                f"output={out}",
                "outputs=[index]",
                "format=cvat",
                "cvat_min_area=0",
                "progress=false",
            ]
        )
    )
    masks, names = import_with_datumaro(Path(summary["cvat_export"]), tmp_path)
    model_names = ["background", "leaf", "stone", "berry"]
    assert names == model_names
    assert sorted(masks) == sorted(p.stem for p in frames.iterdir())
    for item_id, (labels, _) in masks.items():
        predicted = cv2.imread(str(out / f"{item_id}_index.png"), cv2.IMREAD_UNCHANGED)
        if labels is None:  # Datumaro gives an item without instances no mask at all
            assert not predicted.any()
            continue
        np.testing.assert_array_equal(labels, predicted)


def test_more_than_255_regions_import_with_every_class_pixel(tmp_path: Path):
    """Before: instance colours past the VOC palette, and Datumaro refused the item."""
    noisy = np.zeros((100, 100), np.uint8)
    noisy[::4, ::4] = 1  # 625 one-pixel leaf regions
    noisy[1::4, 1::4] = 2  # and 625 stone ones
    noisy[50:70, 10:40] = 2  # one large region
    with CvatWriter(tmp_path / "a.zip", CLASSES, min_area=0) as writer:
        writer.add("noisy", noisy)
    assert writer.report.dropped == 0 and writer.report.merged > 0
    masks, _ = import_with_datumaro(tmp_path / "a.zip", tmp_path)
    labels, count = masks["noisy"]
    assert count == 255
    np.testing.assert_array_equal(labels, noisy)  # every class pixel kept


def test_min_area_leaves_specks_out_and_counts_them(tmp_path: Path):
    noisy = np.zeros((100, 100), np.uint8)
    noisy[::4, ::4] = 1  # 625 specks
    noisy[50:70, 10:40] = 2  # 600 px
    with CvatWriter(tmp_path / "a.zip", CLASSES, min_area=16) as writer:
        writer.add("noisy", noisy)
    assert writer.report.dropped == (noisy == 1).sum()  # every one-pixel speck left
    masks, _ = import_with_datumaro(tmp_path / "a.zip", tmp_path)
    labels, count = masks["noisy"]
    assert count == 1
    expected = np.where(noisy == 2, 2, 0)
    np.testing.assert_array_equal(labels, expected)


def test_an_export_written_like_cvat_reads_to_the_same_classes_and_pixels(
    tiny_export: Path, tmp_path: Path
):
    """Datumaro's voc_segmentation exporter with CVAT's options (colour masks, the task's label
    map), from the tiny export's masks; seglab reads it back to the same classes and pixels."""
    original = read_export(tiny_export)
    decode = build_decoder(original)
    names = original.class_names
    colors = {c.name: tuple(c.color) for c in original.classes}
    items, counts = [], np.zeros(len(names), np.int64)
    for sample in original.samples:
        mask = decode(sample.mask)
        counts += np.bincount(mask.ravel(), minlength=len(names))
        annotations = [
            dm.Mask(image=mask == c, label=int(c))
            for c in np.unique(mask)
            if names[c] != "background"
        ]
        items.append(
            dm.DatasetItem(
                id=sample.id,
                subset="default",
                media=dm.Image.from_file(path=str(sample.image)),
                annotations=annotations,
            )
        )
    dataset = dm.Dataset.from_iterable(
        items, categories={dm.AnnotationType.label: dm.LabelCategories.from_iterable(names)}
    )
    written = tmp_path / "cvat_like"
    dataset.export(
        str(written),
        "voc_segmentation",
        save_media=True,
        apply_colormap=True,
        label_map={name: (colors[name], [], []) for name in names},
    )
    back = read_export(written)  # Datumaro orders the label map its own way: compare by name
    assert sorted(back.class_names) == sorted(names)
    assert {c.name: tuple(c.color) for c in back.classes} == colors
    decode_back = build_decoder(back)
    counts_back = np.zeros(len(back.class_names), np.int64)
    for sample in back.samples:
        counts_back += np.bincount(
            decode_back(sample.mask).ravel(), minlength=len(back.class_names)
        )
    assert len(back.samples) == len(original.samples)
    assert dict(zip(back.class_names, counts_back.tolist(), strict=True)) == dict(
        zip(names, counts.tolist(), strict=True)
    )
