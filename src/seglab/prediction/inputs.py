"""The images to predict: finding them (an image, a folder, a glob or a list file), noting what
reading them as training does changes, and decoding them in loader workers.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from seglab.data.channels import ChannelMismatch
from seglab.data.dataset import read_image
from seglab.data.errors import DatasetError
from seglab.data.intensity import Intensity
from seglab.data.layouts import IMAGE_EXTENSIONS
from seglab.data.workers import resolve_workers
from seglab.errors import ConfigError, MissingFileError

LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class Inputs:
    """Images to predict and the folder their output paths mirror."""

    root: Path
    images: list[Path]
    left_out: list[Path] = field(default_factory=list)  # other files found there, reported

    def relative(self, path: Path) -> Path:
        return path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)


def find_inputs(source: str | Path) -> Inputs:
    """An image, a folder (recursive), a glob pattern, or a text file listing image paths (one
    per line, relative to the list's folder; `#` starts a comment)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        images = [p for p in files if _is_image(p) and not _hidden(p, path)]
        if not images:
            raise MissingFileError(
                f"input={path}: no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder or below"
            )
        chosen = set(images)
        return Inputs(path, images, [p for p in files if p not in chosen])
    if path.is_file():
        if _is_image(path):
            return Inputs(path.parent, [path])
        if path.suffix.lower() in LIST_SUFFIXES:
            return _listed(path)
        raise ConfigError(
            f"input={path}: neither an image ({' '.join(IMAGE_EXTENSIONS)}) nor a list of image "
            f"paths ({' '.join(LIST_SUFFIXES)})"
        )
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        images = [p for p in matches if _is_image(p)]
        if not images:
            raise MissingFileError(f"input={text}: the pattern matches no image files")
        root = _glob_root(text)
        return Inputs(root, images, [p for p in matches if not _is_image(p)])
    raise MissingFileError(f"input={text}: no such file or folder")


def _listed(list_file: Path) -> Inputs:
    entries = []
    for line in list_file.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            entries.append(entry if entry.is_absolute() else list_file.parent / entry)
    if not entries:
        raise ConfigError(f"input={list_file}: the list names no images")
    root = Path(os.path.commonpath([p.parent.resolve() for p in entries]))
    return Inputs(root, [p.resolve() for p in entries])


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]
    return Path(*fixed) if fixed else Path(".")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def check_output_names(inputs: Inputs) -> None:
    """Two inputs that would write the same output files (a.jpg and a.png) are an error."""
    stems = Counter(inputs.relative(p).with_suffix("").as_posix() for p in inputs.images)
    clashes = sorted(stem for stem, n in stems.items() if n > 1)
    if clashes:
        raise ConfigError(
            f"input: {len(clashes)} name(s) exist with several extensions, so their outputs would "
            f"overwrite each other: {', '.join(clashes[:5])}. Rename them or predict them apart"
        )


GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def conversion_note(
    path: Path, intensity: Intensity | None = None, channels: int = 3
) -> str | None:
    """What reading `path` as 8-bit images of `channels` changes (as training reads it, >8-bit
    images mapped by `intensity`), for the report; it reads the header only."""
    try:
        with Image.open(path) as image:
            mode, transparent = image.mode, "transparency" in image.info
    except OSError:
        return None
    changes = []
    if mode in GRAYSCALE_MODES and channels == 3:
        changes.append("grayscale (repeated to 3 channels)")
    if mode in WIDE_MODES:
        rule = (intensity or Intensity()).describe()
        changes.append(f"16-bit (mapped to 8 bits by data.intensity={rule})")
    if mode in ALPHA_MODES or (mode == "P" and transparent):
        changes.append("with an alpha channel (dropped)")
    if mode == "CMYK":
        changes.append("CMYK (converted to RGB)")
    return ", ".join(changes) or None


class ImageFiles(Dataset):
    """Decodes images in loader workers, >8-bit ones mapped by `intensity` (the model's
    `data.intensity`, as training read its images) and read with the model's `channels`, and
    applies `prepare` (the Predictor's
    `preparer`: what the network input of each image needs, decided by the Predictor alone);
    a file that cannot be read comes back as an error, one of channels the model cannot take
    as a fatal one (the caller raises it: every other image is likely the same)."""

    def __init__(
        self,
        paths: Sequence[Path],
        prepare: Callable[[np.ndarray], Any],
        intensity: Intensity | None = None,
        channels: int = 3,
    ):
        self.paths = list(paths)
        self.prepare = prepare
        self.intensity = intensity
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            image = read_image(path, self.intensity, self.channels)
        except ChannelMismatch as err:  # the wrong model for these images: the run stops
            return {"index": i, "error": str(err), "fatal": True}
        except DatasetError as err:
            return {"index": i, "error": str(err)}
        note = conversion_note(path, self.intensity, self.channels)
        return {"index": i, "image": self.prepare(image), "note": note}


def loader_workers(num_workers: int | str, device: torch.device) -> int:
    """`auto`: decode in the main process when the network runs on the CPU (loader processes
    would take cores from the forward pass: 1.5-2x slower at 128 px on 2 cores, see
    benchmarks/README.md), else one process per core, at most 8."""
    if num_workers == "auto" and device.type == "cpu":
        return 0
    return resolve_workers(num_workers)
