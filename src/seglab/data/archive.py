"""Find the dataset root in a folder or a `.zip`, which is unpacked once into a cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from seglab.data.errors import DatasetError

# Files and folders whose presence marks a dataset root, in any of the three layouts.
ROOT_MARKERS = ("labelmap.txt", "classes.txt", "ImageSets", "SegmentationClass", "images")
MAX_DEPTH = 2  # exports are often zipped with one or two enclosing folders


def find_dataset_root(path: Path) -> Path:
    """The folder holding the dataset: `path` itself or a folder up to two levels below."""
    if path.is_file() and path.suffix.lower() == ".zip":
        path = extract_zip(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset not found; set data.path to an export folder or .zip")
    roots = _roots_below(path, MAX_DEPTH)
    if not roots:
        raise DatasetError(
            f"{path}: no dataset found here or up to {MAX_DEPTH} folders below (looked for "
            "labelmap.txt, ImageSets/, SegmentationClass/, images/ + masks/, classes.txt)"
        )
    if len(roots) > 1:
        listed = ", ".join(str(r.relative_to(path)) or "." for r in roots)
        raise DatasetError(
            f"{path}: holds {len(roots)} datasets ({listed}); point data.path at one of them"
        )
    return roots[0]


def _roots_below(folder: Path, depth: int) -> list[Path]:
    if any((folder / marker).exists() for marker in ROOT_MARKERS):
        return [folder]
    if depth == 0:
        return []
    found: list[Path] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            found.extend(_roots_below(child, depth - 1))
    return found


def cache_dir() -> Path:
    return Path(os.environ.get("SEGLAB_CACHE", Path.home() / ".cache" / "seglab"))


def extract_zip(archive: Path) -> Path:
    """Unpack once per archive version (path, size, mtime) and return the folder."""
    stat = archive.stat()
    key = f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    target = (
        cache_dir() / "archives" / f"{archive.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    )
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                parts = PurePosixPath(member).parts
                if member.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                    raise DatasetError(
                        f"{archive}: member {member!r} would unpack outside the folder"
                    )
            zf.extractall(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process (a DDP rank) unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"{archive}: not a readable zip file ({err})") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
