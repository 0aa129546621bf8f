"""Write CVAT "Segmentation Mask 1.1" exports, item by item, into a folder or a .zip.

What CVAT's importer expects (see CVAT_FORMAT in the docs): `labelmap.txt`, colour masks in
`SegmentationClass/<id>.png`, instance masks in `SegmentationObject/<id>.png` (VOC palette
colours, black = no instance), one subset file per subset in `ImageSets/Segmentation/`, and the
images in `JPEGImages/` only for an export "with images". The demo data and predict.py's
`format=cvat` both write through here, so both are read back by the same parser.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from seglab.atomic import new_partial_dir, new_partial_file
from seglab.data.instances import InstanceReport
from seglab.data.instances import instance_mask as instance_mask_of
from seglab.data.labelmap import BACKGROUND, SegClass, index_colors, labelmap_text
from seglab.data.masks import colorize


class CvatWriter:
    """`with CvatWriter(path, classes) as w: w.add(item_id, class_mask)`.

    `path` ending in `.zip` gets a zip file, anything else a folder; either is written under a
    partial name beside it (`seglab.atomic`, modes per the umask) and appears only when the
    writer closes without an error, so a crash never leaves half an export behind. With
    `replace=True` a zip replaces an existing one at that moment, so the previous export
    survives until the new one is complete.
    """

    def __init__(
        self,
        path: str | Path,
        classes: Sequence[SegClass],
        replace: bool = False,
        min_area: int = 0,
    ):
        """`min_area`: regions of fewer pixels are left out of the items whose instances are
        derived here (`seglab.data.instances`); `report` counts them and any merged regions."""
        self.path = Path(path)
        self.min_area = min_area
        self.report = InstanceReport()
        is_zip = self.path.suffix.lower() == ".zip"
        if self.path.exists() and not (replace and is_zip and self.path.is_file()):
            raise FileExistsError(f"{self.path} already exists; choose a new path for the export")
        self.classes = tuple(classes)
        self._palette = np.asarray([c.color for c in self.classes], np.uint8)
        names = [c.name for c in self.classes]
        self._background = names.index(BACKGROUND) if BACKGROUND in names else None
        self._subsets: dict[str, list[str]] = defaultdict(list)
        if is_zip:
            self._tmp = new_partial_file(self.path)
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self._tmp, "w")
        else:
            self._tmp = new_partial_dir(self.path)
            self._zip = None

    def add(
        self,
        item_id: str,
        class_mask: np.ndarray,
        instance_mask: np.ndarray | None = None,
        subset: str = "default",
        image: tuple[bytes, str] | None = None,
    ) -> None:
        """One item: its class-index mask, instance ids (default: connected regions of each
        class other than background, at most 255: `seglab.data.instances`), and optionally the
        image file's bytes and extension."""
        if instance_mask is None:
            class_mask, instance_mask, report = instance_mask_of(
                class_mask, self._background, self.min_area
            )
            self.report.dropped += report.dropped
            self.report.merged += report.merged
        self._put(f"SegmentationClass/{item_id}.png", _png(colorize(class_mask, self._palette)))
        instance_colors = index_colors(int(instance_mask.max()) + 1)
        self._put(
            f"SegmentationObject/{item_id}.png", _png(colorize(instance_mask, instance_colors))
        )
        if image is not None:
            data, extension = image
            self._put(f"JPEGImages/{item_id}{extension}", data)
        self._subsets[subset].append(item_id)

    def close(self) -> Path:
        self._put("labelmap.txt", labelmap_text(self.classes).encode("utf-8"))
        for subset, ids in self._subsets.items():
            self._put(
                f"ImageSets/Segmentation/{subset}.txt", "".join(f"{i}\n" for i in ids).encode()
            )
        if self._zip is not None:
            self._zip.close()
        os.replace(self._tmp, self.path)  # atomic; over a previous zip only with replace=True
        return self.path

    def abort(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> CvatWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _put(self, name: str, data: bytes) -> None:
        if self._zip is not None:
            self._zip.writestr(name, data, compress_type=zipfile.ZIP_STORED)  # PNGs are deflated
            return
        target = self._tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def write_labelmap(path: Path, classes: Iterable[SegClass]) -> None:
    """A labelmap.txt as CVAT's exporter writes it (for exports written outside `CvatWriter`)."""
    Path(path).write_text(labelmap_text(classes), encoding="utf-8")


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError("could not encode a PNG mask")
    return encoded.tobytes()
