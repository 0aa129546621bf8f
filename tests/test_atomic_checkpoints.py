"""Checkpoint saves are atomic in the run's own folder: a save that fails or is killed midway
leaves the previous last.ckpt intact, whatever filesystem $TMPDIR is on, and training resumes
from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from seglab.atomic import PARTIAL
from seglab.checkpoint_io import AtomicCheckpointIO
from seglab.checkpoints import read_checkpoint
from seglab.training import run
from tests.helpers import ROOT, TINY, compose_train

# Trains 2 epochs; the save of last.ckpt after the second one writes half the file, then hangs.
SLOW_SAVE_RUN = """
import io, sys, time
from pathlib import Path
import torch
from seglab.training import run
from tests.helpers import TINY, compose_train

export, run_dir, flag = sys.argv[1:4]
real_save = torch.save

def slow_save(obj, file, *args, **kwargs):
    if "last.ckpt" in str(getattr(file, "name", "")) and obj.get("epoch") == 1:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        Path(flag).write_text(str(file.name))
        time.sleep(600)
    return real_save(obj, file, *args, **kwargs)

torch.save = slow_save
run(compose_train([*TINY, f"data.path={export}", f"run_dir={run_dir}", "trainer.max_epochs=2",
                   "logger=none", "test=false"]))
"""


def other_filesystem_tmpdir(near: Path) -> Path:
    """A $TMPDIR on another filesystem than `near` where there is one (/dev/shm), so that a
    writer going through $TMPDIR would have to copy rather than rename."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != near.stat().st_dev:
        return Path(tempfile.mkdtemp(dir=shm, prefix="seglab-test-"))
    (near / "tmpdir").mkdir()
    return near / "tmpdir"


def test_a_failed_save_keeps_the_previous_checkpoint_and_uses_no_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tmpdir = other_filesystem_tmpdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 0, "weight": torch.ones(3)}, target)
    before = target.read_bytes()

    def failing_save(obj: object, file: object, *args: object, **kwargs: object) -> None:
        file.write(b"the first bytes of a checkpoint")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 1, "weight": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no partial left behind
    assert list(tmpdir.iterdir()) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_a_save_killed_midway_keeps_last_ckpt_and_training_resumes(
    tiny_export: Path, tmp_path: Path
):
    run_dir, flag = tmp_path / "run", tmp_path / "saving"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(other_filesystem_tmpdir(tmp_path))}
    script = tmp_path / "slow_save_run.py"
    script.write_text(SLOW_SAVE_RUN)
    log = tmp_path / "output.txt"
    with log.open("w") as output:  # a file, not a pipe: a full pipe would stall the child
        process = subprocess.Popen(
            [sys.executable, str(script), str(tiny_export), str(run_dir), str(flag)],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 400
            while not flag.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert flag.exists() and process.returncode == -signal.SIGKILL, log.read_text()[-3000:]

    checkpoints = run_dir / "checkpoints"
    last = checkpoints / "last.ckpt"
    previous = read_checkpoint(last)  # the previous save, whole
    assert previous["epoch"] == 0
    partial = Path(flag.read_text())
    assert partial.parent == checkpoints and PARTIAL in partial.name and partial.exists()

    resumed_cfg = [*TINY, f"data.path={tiny_export}", f"run_dir={run_dir}", "logger=none",
                   "test=false", "trainer.max_epochs=2", f"ckpt_path={last}"]  # fmt: skip
    run(compose_train(resumed_cfg))
    resumed = read_checkpoint(last)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * previous["global_step"]  # one more epoch, not two
    assert not partial.exists()  # the killed save's partial file was cleaned up
