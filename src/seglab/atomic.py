"""Atomic file outputs: a file appears complete under its name, or the previous one stays.

Every output is first written to a hidden partial name beside it (same folder, so the final
`os.replace` is a rename within one filesystem, atomic on POSIX and Windows), then renamed over
the target. A killed process (kill -9, power cut before the rename) leaves at most a partial
file, never a truncated target; the next run that writes into that folder removes partial files
whose writer no longer runs (`remove_stale`).

Partial files are created with mode 0o666 (0o777 for folders) and the user's umask applies, as
for any file `open()` creates; `tempfile.mkstemp` would make them 0600 for good.

Partial names: `.<name>.seglab-partial-<pid>-<random><suffix>`. The suffix is kept because
writers such as `cv2.imwrite` and `np.save` choose the format by it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".seglab-partial-"
# Where a writer's process cannot be checked (not POSIX), partial files older than this are stale.
STALE_AFTER_S = 24 * 3600


def partial_name(path: Path) -> Path:
    """A fresh hidden name beside `path` that `remove_stale` recognises and can attribute."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}{PARTIAL}{token}{path.suffix}")


def new_partial_file(path: str | Path) -> Path:
    """Create an empty partial file for `path` (its folder is created too); mode per umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_name(path)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return partial


def new_partial_dir(path: str | Path) -> Path:
    """Create an empty partial folder for `path`; mode per umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_name(path)
    os.mkdir(partial, 0o777)
    return partial


@contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a new empty partial file to write; on a clean exit it replaces `path`, on an
    exception it is removed and `path` is left as it was.

    `fsync=True` also flushes the data to disk before the rename (survives a power cut, costs
    a disk round trip per file); a killed process never needs it.
    """
    path = Path(path)
    partial = new_partial_file(path)
    try:
        yield partial
        if fsync:
            _fsync(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync(path.parent)


def atomic_write(path: str | Path, write: Callable[[Path], object], fsync: bool = False) -> Path:
    """`write(partial)` writes the content to the given path; then it replaces `path`."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as partial:
        write(partial)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda partial: partial.write_text(text, encoding=encoding))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda partial: partial.write_bytes(data))


def remove_stale(folder: str | Path) -> list[Path]:
    """Remove the partial files and folders in `folder` (not below) whose writing process has
    ended, i.e. was killed before it could rename or remove them; returns what was removed.

    A partial of a process that still runs (another predict.py writing here) is kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.glob(f".*{PARTIAL}*"):
        if not _writer_ended(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _writer_ended(entry: Path) -> bool:
    try:
        pid = int(entry.name.split(PARTIAL, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False  # not one of ours after all
    if pid == os.getpid():
        return False  # this process is writing it now
    if os.name != "posix":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        try:
            return time.time() - entry.lstat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _fsync(path: Path) -> None:
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # folders cannot be opened on some systems (Windows): nothing to flush there
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
