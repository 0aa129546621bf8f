"""Zipped datasets are untrusted: only dataset files are unpacked, bombs are refused before a
byte is written, killed extractions are cleaned up, and `seglab cache` shows and frees the space."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.data.archive import RATIO_FLOOR, extract_zip
from seglab.data.cache import archives_dir
from seglab.data.errors import DatasetError
from seglab.data.layouts import read_export
from tests.exports import striped, write_cvat


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "archives"


def zip_folder(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """`folder`'s files under `export/` in the zip, plus `extra` members."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, "export/" + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def small_export(tmp_path: Path) -> Path:
    return write_cvat(tmp_path / "src", {"train": {"a": striped()}, "val": {"b": striped()}})


def unpacked_files(cache: Path) -> set[str]:
    (folder,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_only_dataset_files_are_unpacked(tmp_path: Path, cache: Path, capsys):
    archive = zip_folder(
        small_export(tmp_path),
        tmp_path / "e.zip",
        extra={
            "export/run.sh": b"rm -rf ~\n",
            "export/README.md": b"notes",
            "export/notes/todo.txt": b"not a subset list",
            "export/SegmentationObject/a.png": b"instances, never read",
            "__MACOSX/export/JPEGImages/._a.jpg": b"AppleDouble",
            "export/.DS_Store": b"finder",
        },
    )
    export = read_export(archive)
    assert [s.id for s in export.samples] == ["a", "b"]
    assert unpacked_files(cache) == {
        ".seglab-archive.json",
        "export/labelmap.txt",
        "export/ImageSets/Segmentation/train.txt",
        "export/ImageSets/Segmentation/val.txt",
        "export/JPEGImages/a.jpg",
        "export/JPEGImages/b.jpg",
        "export/SegmentationClass/a.png",
        "export/SegmentationClass/b.png",
    }
    note = f"{archive}: left out 6 file(s) that are not dataset files: export/run.sh, "
    assert any(n.startswith(note) for n in export.notes)
    assert any(n.startswith(note) for n in read_export(archive).notes)  # cached: still said
    capsys.readouterr()
    assert main(["inspect", str(archive), "--json"]) == 0
    assert any(n.startswith(note) for n in json.loads(capsys.readouterr().out)["notes"])


def test_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path, cache: Path):
    """A real bomb: 128 MiB of zeros deflate to ~130 KB, a 1000-fold expansion."""
    archive = zip_folder(small_export(tmp_path), tmp_path / "bomb.zip")
    with (
        zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf,
        zf.open("export/JPEGImages/c.png", "w", force_zip64=True) as member,
    ):
        for _ in range(128):
            member.write(bytes(1 << 20))
    assert archive.stat().st_size < 1 << 20 and RATIO_FLOOR < 128 << 20
    with pytest.raises(
        DatasetError, match=r"bomb\.zip: would expand \d+-fold .* SEGLAB_ZIP_MAX_RATIO"
    ):
        read_export(archive)
    assert list(cache.iterdir()) == []  # nothing unpacked, no temporary folder left


def test_expanded_size_limit_is_configurable(tmp_path: Path, cache: Path, monkeypatch):
    archive = zip_folder(small_export(tmp_path), tmp_path / "e.zip")
    monkeypatch.setenv("SEGLAB_ZIP_MAX_BYTES", "1K")
    with pytest.raises(DatasetError, match=r"e\.zip: would expand to .* SEGLAB_ZIP_MAX_BYTES=\d+"):
        read_export(archive)
    monkeypatch.setenv("SEGLAB_ZIP_MAX_BYTES", "lots")
    with pytest.raises(DatasetError, match="SEGLAB_ZIP_MAX_BYTES='lots': give a positive number"):
        read_export(archive)
    monkeypatch.setenv("SEGLAB_ZIP_MAX_BYTES", "1G")
    assert len(read_export(archive).samples) == 2


def test_members_sharing_data_are_refused(tmp_path: Path, cache: Path):
    """The non-recursive bomb's trick: many central-directory entries, one compressed block."""
    archive = zip_folder(small_export(tmp_path), tmp_path / "overlap.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("export/JPEGImages/x.png", b"x" * 1000)
        zf.writestr("export/JPEGImages/y.png", b"y" * 1000)
        zf.filelist[-1].header_offset = zf.filelist[-2].header_offset
    with pytest.raises(DatasetError, match="members share compressed data"):
        read_export(archive)


def test_killed_extractions_are_cleaned_up(tmp_path: Path, cache: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    host = socket.gethostname()
    killed = cache / f".extract-{host}-{dead.stdout.strip()}-k1ll3d"
    running = cache / f".extract-{host}-{os.getpid()}-4l1v3"
    elsewhere = cache / ".extract-otherhost-1-n3w"
    old = cache / ".extract-0ld"
    for folder in (killed, running, elsewhere, old):
        (folder / "export").mkdir(parents=True)
        (folder / "export" / "labelmap.txt").write_text("half")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))

    extract_zip(zip_folder(small_export(tmp_path), tmp_path / "e.zip"))
    assert not killed.exists() and not old.exists()
    assert running.exists() and elsewhere.exists()


def test_cache_command_lists_sizes_and_clears(tmp_path: Path, cache: Path, capsys):
    archive = zip_folder(small_export(tmp_path), tmp_path / "e.zip")
    target = extract_zip(archive)
    capsys.readouterr()
    assert main(["cache"]) == 0
    listed = capsys.readouterr().out
    assert f"{archives_dir()}: 1 unpacked archive(s)" in listed
    assert f"{target.name}  ({archive.resolve()})" in listed and "KiB" in listed
    assert main(["cache", "clear"]) == 0
    assert "Removed 1 folder(s)" in capsys.readouterr().out
    assert not target.exists()
    assert main(["cache"]) == 0
    assert ": 0 unpacked archive(s), 0 B" in capsys.readouterr().out
    shutil.rmtree(cache)
    assert main(["cache", "clear"]) == 0  # no cache folder at all is fine
