"""Atomic outputs: a file appears whole or not at all, with the umask's mode, and partial files
of killed writers are removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.atomic import PARTIAL, atomic_write, atomic_write_text, new_partial_file, remove_stale


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(f".*{PARTIAL}*"))


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path):
    target = atomic_write_text(tmp_path / "metrics.json", "old\n")

    def fail(partial: Path) -> None:
        partial.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        atomic_write(target, fail)
    assert target.read_text() == "old\n" and partials(tmp_path) == []
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and partials(tmp_path) == []


def test_modes_follow_the_umask(tmp_path: Path):
    previous = os.umask(0o027)
    try:
        written = atomic_write_text(tmp_path / "sub" / "a.txt", "x")
    finally:
        os.umask(previous)
    assert written.stat().st_mode & 0o777 == 0o640


def test_stale_partials_of_ended_writers_are_removed(tmp_path: Path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(ended.stdout)
    dead_file = tmp_path / f".a.png{PARTIAL}{pid}-00ff00ff.png"
    dead_file.write_bytes(b"half")
    dead_dir = tmp_path / f".export{PARTIAL}{pid}-00ff00ff"  # a partial CVAT export folder
    (dead_dir / "SegmentationClass").mkdir(parents=True)
    alive = tmp_path / f".c.png{PARTIAL}{os.getppid()}-00ff00ff.png"  # a running writer's
    alive.write_bytes(b"in flight")
    own = new_partial_file(tmp_path / "d.npy")  # this process's, in flight
    (tmp_path / ".unrelated").write_text("kept")
    removed = remove_stale(tmp_path)
    assert sorted(removed) == sorted([dead_file, dead_dir])
    assert partials(tmp_path) == sorted([alive.name, own.name])
    assert (tmp_path / ".unrelated").is_file()
