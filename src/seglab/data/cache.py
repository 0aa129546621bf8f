"""The extraction cache: `$SEGLAB_CACHE/archives` (default `~/.cache/seglab/archives`).

Each `.zip` given as `data.path` is unpacked once into `<stem>-<hash of path, size, mtime>/`,
so a changed archive gets a new folder and the old one stays until `seglab cache clear`
removes it (nothing is pruned behind the user's back: a run may be reading it). An extraction
in progress lives in `.extract-<host>-<pid>-<random>/` and is renamed when complete; one left by
a killed process is removed by the next extraction on the same host, or after a day by any.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

TMP_PREFIX = ".extract-"
STALE_AFTER_S = 24 * 3600  # an extraction by another host (shared cache) may still be running
METADATA = ".seglab-archive.json"


def cache_dir() -> Path:
    return Path(os.environ.get("SEGLAB_CACHE", Path.home() / ".cache" / "seglab"))


def archives_dir() -> Path:
    return cache_dir() / "archives"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int  # bytes on disk
    archive: str | None  # the zip it came from, if recorded
    partial: bool  # an unfinished extraction


def list_cache() -> list[CacheEntry]:
    """Every extracted archive and unfinished extraction, largest first."""
    folder = archives_dir()
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir():
            continue
        archive = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            archive = json.loads((path / METADATA).read_text(encoding="utf-8"))["archive"]
        partial = path.name.startswith(TMP_PREFIX)
        entries.append(CacheEntry(path, _disk_size(path), archive, partial))
    return sorted(entries, key=lambda e: -e.size)


def clear_cache() -> tuple[int, int]:
    """Remove every extracted archive (and unfinished extraction): (folders, bytes) freed."""
    entries = list_cache()
    for entry in entries:
        shutil.rmtree(entry.path, ignore_errors=True)
    return len(entries), sum(e.size for e in entries)


def remove_stale_extractions(folder: Path) -> list[Path]:
    """Remove temporary folders of extractions that will never finish: started on this host by
    a process that no longer runs, or (any host, or an older name) untouched for a day."""
    removed = []
    host = socket.gethostname()
    for path in folder.glob(f"{TMP_PREFIX}*"):
        if _is_stale(path, host):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _is_stale(path: Path, host: str) -> bool:
    fields = path.name[len(TMP_PREFIX) :].rsplit("-", 2)  # host (may hold '-'), pid, random
    if len(fields) == 3 and fields[0] == host and fields[1].isdigit():
        return not _running(int(fields[1]))
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _disk_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
