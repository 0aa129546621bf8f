"""Find the dataset root in a folder or a `.zip`, which is unpacked once into a cache.

A zip is untrusted input (exports are downloaded and shared), so extraction is bounded:
- only dataset files are unpacked: images and masks, labelmap.txt, classes.txt and the subset
  lists under ImageSets/ (not SegmentationObject/, which seglab never reads, nor macOS
  `__MACOSX/` and `._*` files, scripts or documents);
- members that would land outside the folder, or whose data overlap (a "non-recursive zip
  bomb" reuses one compressed block for many files), refuse the archive;
- the expanded size must fit `$SEGLAB_ZIP_MAX_BYTES` (default 32 GiB) and the free disk space,
  and above 100 MiB the expansion may be at most `$SEGLAB_ZIP_MAX_RATIO` (default 100) times
  the compressed size. Real exports are JPEGs and PNGs, which zip does not shrink further
  (ratio ~1); one deflated block of zeros reaches ~1000.

The sizes checked are the ones the archive declares; Python's zipfile never writes more than the
declared size of a member and checks its CRC, so a lying header fails instead of filling the disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import socket
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from seglab.data.cache import METADATA, TMP_PREFIX, archives_dir, remove_stale_extractions
from seglab.data.errors import DatasetError
from seglab.data.images import IMAGE_EXTENSIONS

# Files and folders whose presence marks a dataset root, in any of the three layouts.
ROOT_MARKERS = ("labelmap.txt", "classes.txt", "ImageSets", "SegmentationClass", "images")
MAX_DEPTH = 2  # exports are often zipped with one or two enclosing folders

MAX_BYTES_ENV = "SEGLAB_ZIP_MAX_BYTES"
MAX_RATIO_ENV = "SEGLAB_ZIP_MAX_RATIO"
DEFAULT_MAX_BYTES = 32 << 30  # several times the largest CVAT exports seen (a few GB)
DEFAULT_MAX_RATIO = 100.0
RATIO_FLOOR = 100 << 20  # below 100 MiB expanded, any ratio is harmless
DISK_MARGIN = 1 << 30  # leave 1 GiB free after extracting
CLASS_FILES = ("labelmap.txt", "classes.txt")
SKIPPED_FOLDERS = ("__MACOSX", "SegmentationObject")


def find_dataset_root(path: Path, notes: list[str] | None = None) -> Path:
    """The folder holding the dataset: `path` itself or a folder up to two levels below.

    For a zip, `notes` (if given) gets the files left out of the extraction, on every read and
    not only the first, so `seglab inspect` and training report them alike.
    """
    if path.is_file() and path.suffix.lower() == ".zip":
        archive = path
        path = extract_zip(archive)
        if notes is not None:
            notes.extend(_skipped_note(archive, path))
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


def extract_zip(archive: Path) -> Path:
    """Unpack the dataset files once per archive version (path, size, mtime); the folder."""
    stat = archive.stat()
    key = f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    cache = archives_dir()
    target = cache / f"{archive.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_extractions(cache)
    # host and pid in the name tell a later run whether this extraction is still going on.
    prefix = f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=cache))
    try:
        with zipfile.ZipFile(archive) as zf:
            members, skipped = select_members(archive, zf.infolist())
            check_limits(archive, members, stat.st_size, cache)
            for member in members:
                zf.extract(member, tmp)
        metadata = {"archive": str(archive.resolve()), "extracted": time.time(), "skipped": skipped}
        (tmp / METADATA).write_text(json.dumps(metadata) + "\n", encoding="utf-8")
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


def _skipped_note(archive: Path, folder: Path) -> list[str]:
    """The note listing what `extract_zip` left out of `folder`, as its metadata recorded."""
    try:
        skipped = json.loads((folder / METADATA).read_text(encoding="utf-8"))["skipped"]
    except (OSError, ValueError, KeyError):
        return []
    if not skipped:
        return []
    shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    return [f"{archive}: left out {len(skipped)} file(s) that are not dataset files: {shown}"]


def select_members(
    archive: Path, infos: list[zipfile.ZipInfo]
) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """The members to unpack and the names of the files left out; refuses escaping names."""
    members: list[zipfile.ZipInfo] = []
    skipped: list[str] = []
    for info in infos:
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise DatasetError(
                f"{archive}: member {info.filename!r} would unpack outside the folder; "
                "the archive is damaged or malicious, re-export it"
            )
        if info.is_dir():
            continue
        if is_dataset_file(parts):
            members.append(info)
        else:
            skipped.append(info.filename)
    return members, skipped


def is_dataset_file(parts: tuple[str, ...]) -> bool:
    """An image or mask, a class list, or a subset list under ImageSets/."""
    name = parts[-1]
    if name.startswith(".") or any(p in SKIPPED_FOLDERS for p in parts[:-1]):
        return False
    if name in CLASS_FILES:
        return True
    if name.lower().endswith(".txt"):
        return "ImageSets" in parts[:-1]
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def check_limits(
    archive: Path, members: list[zipfile.ZipInfo], archive_size: int, cache: Path
) -> None:
    """Refuse a zip bomb before anything is written (see the module docstring)."""
    expanded = sum(m.file_size for m in members)
    compressed = sum(m.compress_size for m in members)
    fix = (
        "If the archive is genuine, unzip it yourself and set data.path to the folder, or raise "
        "the limit"
    )
    if compressed > archive_size or _overlapping(members):
        raise DatasetError(
            f"{archive}: members share compressed data (a zip bomb's trick: {compressed} bytes "
            f"of members in a {archive_size}-byte file); refused"
        )
    max_bytes = _env_number(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    if expanded > max_bytes:
        raise DatasetError(
            f"{archive}: would expand to {_gb(expanded)}, over the limit of {_gb(max_bytes)} "
            f"({MAX_BYTES_ENV}). {fix}: {MAX_BYTES_ENV}={expanded}"
        )
    max_ratio = _env_number(MAX_RATIO_ENV, DEFAULT_MAX_RATIO)
    ratio = expanded / max(compressed, 1)
    if expanded > RATIO_FLOOR and ratio > max_ratio:
        raise DatasetError(
            f"{archive}: would expand {ratio:.0f}-fold ({_gb(compressed)} -> {_gb(expanded)}), "
            f"over the limit of {max_ratio:g} ({MAX_RATIO_ENV}); images and masks do not "
            f"compress like that, a zip bomb does. {fix}: {MAX_RATIO_ENV}={ratio:.0f}"
        )
    free = shutil.disk_usage(cache).free
    if expanded > free - DISK_MARGIN:
        raise DatasetError(
            f"{archive}: needs {_gb(expanded)} to unpack, {_gb(free)} free in {cache} (1 GiB is "
            "kept free). Free space, set SEGLAB_CACHE to a larger disk, or unzip it yourself and "
            "set data.path to the folder"
        )


def _overlapping(members: list[zipfile.ZipInfo]) -> bool:
    """Whether two members' data start within each other's local header and data."""
    spans = sorted((m.header_offset, m.compress_size) for m in members)
    return any(b[0] < a[0] + a[1] for a, b in itertools.pairwise(spans))


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    scale = units.get(text[-1].upper(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = 0.0
    if value <= 0:
        raise DatasetError(f"{name}={text!r}: give a positive number (K, M, G, T suffixes allowed)")
    return value


def _gb(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"
