"""Every dataset layout trains through the real config, as `python train.py data.path=...`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seglab.training import run
from tests.exports import striped, write_cvat, write_folders
from tests.helpers import TINY, compose_train

ITEMS = {f"img{i}": striped(40, 48) for i in range(5)}


def cvat_zip(root: Path) -> Path:
    write_cvat(root / "src" / "task_export", {"default": ITEMS})
    return Path(shutil.make_archive(str(root / "export"), "zip", root / "src"))


LAYOUTS = {
    "cvat": lambda root: write_cvat(
        root / "e", {"train": ITEMS, "Validation": {"v": striped(40, 48)}}
    ),
    "cvat-zip-unsplit": cvat_zip,
    "split": lambda root: write_folders(
        root / "e", {"train": ITEMS, "val": {"v": striped(40, 48)}}
    ),
    "index": lambda root: write_folders(root / "e", {"": ITEMS}, index_masks=True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_trains_end_to_end(layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    path = LAYOUTS[layout](tmp_path)
    extra = ["data.classes=[bg,crack,rust]"] if layout == "index" else []
    cfg = compose_train(
        [*TINY, "data=cvat", f"data.path={path}", "model.encoder_weights=null", *extra,
         f"run_dir={tmp_path / 'run'}", "trainer.max_epochs=1", "logger=none"]
    )  # fmt: skip
    metrics = run(cfg)
    assert 0.0 <= metrics["val/mIoU"] <= 1.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len([k for k in saved if k.startswith("val/iou/")]) == 3
    split_files = sorted(p.name for p in (tmp_path / "run" / "splits").iterdir())
    assert split_files == ["train.txt", "val.txt"]
