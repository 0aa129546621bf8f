"""predict.py's work: find the input images, predict them in batches, write the masks, and
optionally score them against labels and package them as a CVAT export to import back.

`run(cfg)` takes the composed `conf/predict.yaml`; everything else here is importable alone.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from seglab.data.archive import find_dataset_root
from seglab.data.cvat import IMAGE_EXTENSIONS, parse_labelmap
from seglab.data.cvat_writer import CvatWriter
from seglab.data.datamodule import resolve_workers
from seglab.data.dataset import read_image
from seglab.data.errors import DatasetError
from seglab.data.masks import MaskDecoder, colorize
from seglab.inference import ModelInfo, Predictor, load_predictor, resize_image, to_labels
from seglab.metrics import format_table, metrics_from_confusion, write_confusion

OUTPUT_KINDS = ("index", "color", "overlay", "probs")
FORMATS = (None, "cvat")
LIST_SUFFIXES = (".txt", ".lst", ".list")
CVAT_ZIP = "cvat_export.zip"


# ---------------------------------------------------------------- inputs


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
            raise FileNotFoundError(
                f"input={path}: no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder or below"
            )
        chosen = set(images)
        return Inputs(path, images, [p for p in files if p not in chosen])
    if path.is_file():
        if _is_image(path):
            return Inputs(path.parent, [path])
        if path.suffix.lower() in LIST_SUFFIXES:
            return _listed(path)
        raise ValueError(
            f"input={path}: neither an image ({' '.join(IMAGE_EXTENSIONS)}) nor a list of image "
            f"paths ({' '.join(LIST_SUFFIXES)})"
        )
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        images = [p for p in matches if _is_image(p)]
        if not images:
            raise FileNotFoundError(f"input={text}: the pattern matches no image files")
        root = _glob_root(text)
        return Inputs(root, images, [p for p in matches if not _is_image(p)])
    raise FileNotFoundError(f"input={text}: no such file or folder")


def _listed(list_file: Path) -> Inputs:
    entries = []
    for line in list_file.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            entries.append(entry if entry.is_absolute() else list_file.parent / entry)
    if not entries:
        raise ValueError(f"input={list_file}: the list names no images")
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
        raise ValueError(
            f"input: {len(clashes)} name(s) exist with several extensions, so their outputs would "
            f"overwrite each other: {', '.join(clashes[:5])}. Rename them or predict them apart"
        )


GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def conversion_note(path: Path) -> str | None:
    """What reading `path` as 8-bit RGB changes (as training reads it), for the report; it
    reads the header only."""
    try:
        with Image.open(path) as image:
            mode, transparent = image.mode, "transparency" in image.info
    except OSError:
        return None
    changes = []
    if mode in GRAYSCALE_MODES:
        changes.append("grayscale (repeated to 3 channels)")
    if mode in WIDE_MODES:
        changes.append("16-bit (reduced to 8 bits)")
    if mode in ALPHA_MODES or (mode == "P" and transparent):
        changes.append("with an alpha channel (dropped)")
    if mode == "CMYK":
        changes.append("CMYK (converted to RGB)")
    return ", ".join(changes) or None


class ImageFiles(Dataset):
    """Decodes images in loader workers; a file that cannot be read comes back as an error."""

    def __init__(self, paths: Sequence[Path], input_size: tuple[int, int] | None):
        self.paths = list(paths)
        self.input_size = input_size  # resize mode: also the network input, made here

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            image = read_image(path)
        except DatasetError as err:
            return {"index": i, "error": str(err)}
        resized = resize_image(image, self.input_size) if self.input_size else None
        return {"index": i, "image": image, "resized": resized, "note": conversion_note(path)}


# ---------------------------------------------------------------- labels


class LabelFiles:
    """Ground-truth masks for the predicted images, to score the predictions.

    `path` is a CVAT export (folder or .zip: masks from SegmentationClass/, colours from its
    labelmap.txt) or a folder of masks whose paths mirror the input's, coloured with a
    labelmap.txt beside them (or at the dataset root above `masks/<split>/`), else with the
    checkpoint's colours; single-channel masks hold class ids. Labels are matched to the
    model's classes by name.
    """

    def __init__(self, path: str | Path, info: ModelInfo):
        path = Path(path).expanduser()
        if path.suffix.lower() == ".zip" or (path / "labelmap.txt").is_file():
            path = find_dataset_root(path.resolve())
        if not path.is_dir():
            raise FileNotFoundError(f"labels={path}: no such folder or .zip")
        self.masks = path / "SegmentationClass" if (path / "SegmentationClass").is_dir() else path
        labelmap = next((p for p in self._labelmap_candidates(path) if p.is_file()), None)
        names = info.names
        labels = info.seg_classes if labelmap is None else list(parse_labelmap(labelmap))
        self.not_in_model = [lb for lb in labels if lb.name not in names]
        if len(self.not_in_model) == len(labels):
            raise DatasetError(
                f"{labelmap}: none of its labels ({', '.join(lb.name for lb in labels)}) is a "
                f"class of the model ({', '.join(names)}); give the labels of this model's classes"
            )
        targets = [names.index(lb.name) if lb.name in names else info.ignore_index for lb in labels]
        self.decoder = MaskDecoder([lb.color for lb in labels], targets, info.ignore_index)

    @staticmethod
    def _labelmap_candidates(path: Path) -> list[Path]:
        candidates = [path / "labelmap.txt"]
        if path.parent.name == "masks":  # images/<split>/ + masks/<split>/ + labelmap.txt
            candidates.append(path.parent.parent / "labelmap.txt")
        return candidates

    def mask_path(self, relative: Path) -> Path | None:
        path = self.masks / relative.with_suffix(".png")
        return path if path.is_file() else None

    def read(self, mask_path: Path, image_path: Path, shape: tuple[int, int]) -> np.ndarray:
        mask = self.decoder(mask_path)
        if mask.shape != shape:
            raise DatasetError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{shape[1]}x{shape[0]} (WxH); labels must be the masks of these very images"
            )
        return mask


def confusion_update(
    confusion: np.ndarray, target: np.ndarray, predicted: np.ndarray, ignore_index: int
) -> None:
    """Add one image's pixels to `confusion[true, predicted]`; ignored pixels do not count."""
    n = confusion.shape[0]
    valid = target != ignore_index
    pairs = target[valid].astype(np.int64) * n + predicted[valid]
    confusion += np.bincount(pairs, minlength=n * n).reshape(n, n)


# ---------------------------------------------------------------- outputs


class MaskWriter:
    """Writes each image's requested outputs next to its mirrored path under `output`."""

    def __init__(self, output: Path, kinds: Sequence[str], info: ModelInfo, alpha: float):
        unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
        if unknown or not kinds:
            raise ValueError(f"outputs={list(kinds)}: choose from {list(OUTPUT_KINDS)}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay_alpha={alpha}: give the mask's weight in [0, 1]")
        self.output, self.kinds, self.alpha = output, set(kinds), alpha
        self.palette = np.asarray(info.colors, np.uint8)

    def write(
        self, relative: Path, image: np.ndarray, labels: np.ndarray, logits: torch.Tensor
    ) -> None:
        stem = self.output / relative.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        if "index" in self.kinds:
            _imwrite(stem.with_name(f"{stem.name}_index.png"), labels)
        if {"color", "overlay"} & self.kinds:
            color = colorize(labels, self.palette)
            if "color" in self.kinds:
                _imwrite(stem.with_name(f"{stem.name}_color.png"), color[..., ::-1])
            if "overlay" in self.kinds:
                blended = cv2.addWeighted(image, 1.0 - self.alpha, color, self.alpha, 0.0)
                _imwrite(stem.with_name(f"{stem.name}_overlay.jpg"), blended[..., ::-1])
        if "probs" in self.kinds:
            probs = torch.softmax(logits, dim=0).half().cpu().numpy()
            np.save(stem.with_name(f"{stem.name}_probs.npy"), probs)


def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(array)):
        raise OSError(f"{path}: could not write file")


# ---------------------------------------------------------------- the run


def build_predictor(cfg: DictConfig) -> Predictor:
    """The network of `ckpt=` (backend=torch) or of `model=` (backend=onnx) with the options."""
    tta = cfg.tta
    if isinstance(tta, bool):  # `tta=true` on the command line: flips
        flip, scales = tta, [1.0]
    else:
        flip, scales = bool(tta.flip), list(tta.scales)
    options = {
        "mode": cfg.mode,
        "overlap": float(cfg.overlap),
        "flip": flip,
        "scales": scales,
        "batch_size": int(cfg.batch_size),
    }
    if cfg.backend == "torch":
        if not cfg.ckpt:
            raise ValueError("backend=torch needs ckpt=PATH (a checkpoint written by train.py)")
        return load_predictor(to_absolute_path(str(cfg.ckpt)), cfg.device, amp=cfg.amp, **options)
    if cfg.backend == "onnx":
        from seglab.export import load_onnx_predictor

        if not cfg.model:
            raise ValueError("backend=onnx needs model=PATH (an .onnx file from `seglab export`)")
        if cfg.amp:
            raise ValueError("amp=true applies to backend=torch; an ONNX model runs as exported")
        return load_onnx_predictor(to_absolute_path(str(cfg.model)), cfg.device, **options)
    raise ValueError(f"backend={cfg.backend!r}: choose torch or onnx")


@dataclass
class Report:
    """What happened to the inputs besides being predicted: nothing is left out unsaid."""

    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    conversions: Counter[str] = field(default_factory=Counter)
    unlabeled: list[Path] = field(default_factory=list)
    scored: int = 0


def predict_images(
    predictor: Predictor,
    paths: Sequence[Path],
    num_workers: int | str,
    report: Report,
    progress: bool = True,
) -> Iterator[tuple[Path, np.ndarray, torch.Tensor]]:
    """(path, RGB image, logits at its size) per readable image, decoded by loader workers
    and predicted in batches; unreadable files go into `report` and are skipped."""
    dataset = ImageFiles(paths, predictor.info.image_size if predictor.mode == "resize" else None)
    loader = DataLoader(
        dataset,
        batch_size=predictor.batch_size,
        num_workers=loader_workers(num_workers, predictor.device),
        collate_fn=list,
    )
    with _progress(progress) as bar:
        task = bar.add_task("predict", total=len(dataset))
        for batch in loader:
            ready = []
            for item in batch:
                path = dataset.paths[item["index"]]
                if "error" in item:
                    report.unreadable.append((path, item["error"]))
                    bar.console.print(f"[seglab] skipped unreadable {item['error']}")
                    continue
                ready.append((path, item))
                if item["note"]:
                    report.conversions[item["note"]] += 1
            if ready:
                ready_paths = [path for path, _ in ready]
                images = [item["image"] for _, item in ready]
                resized = [item["resized"] for _, item in ready] if dataset.input_size else None
                logits = predictor.logits(images, resized)
                yield from zip(ready_paths, images, logits, strict=True)
            bar.advance(task, len(batch))


def loader_workers(num_workers: int | str, device: torch.device) -> int:
    """`auto`: decode in the main process when the network runs on the CPU (loader processes
    would take cores from the forward pass: 1.5-2x slower at 128 px on 2 cores, see
    benchmarks/README.md), else one process per core, at most 8."""
    if num_workers == "auto" and device.type == "cpu":
        return 0
    return resolve_workers(num_workers)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict every input image; returns the summary (and metrics with `labels=`)."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}: choose null or cvat")
    output = Path(to_absolute_path(str(cfg.output)))
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"output={output} is an existing file; give a folder")
    predictor = build_predictor(cfg)
    info = predictor.info
    inputs = find_inputs(to_absolute_path(str(cfg.input)))
    check_output_names(inputs)
    writer = MaskWriter(output, list(cfg.outputs), info, float(cfg.overlay_alpha))
    labels = LabelFiles(to_absolute_path(str(cfg.labels)), info) if cfg.labels else None
    output.mkdir(parents=True, exist_ok=True)
    if inputs.left_out:
        kinds = " ".join(sorted({p.suffix.lower() or p.name for p in inputs.left_out}))
        _say(f"input: left out {len(inputs.left_out)} hidden or non-image file(s) ({kinds})")

    cvat = None
    if cfg.format == "cvat":
        (output / CVAT_ZIP).unlink(missing_ok=True)  # this run's export replaces an older one
        cvat = CvatWriter(output / CVAT_ZIP, info.seg_classes)
    n = len(info.classes)
    confusion = np.zeros((n, n), np.int64)
    report = Report()
    written = 0
    start = time.perf_counter()
    with cvat or nullcontext():
        for path, image, logits in predict_images(
            predictor, inputs.images, cfg.num_workers, report, bool(cfg.progress)
        ):
            relative = inputs.relative(path)
            predicted = to_labels(logits, n)
            writer.write(relative, image, predicted, logits)
            if labels is not None:
                mask_path = labels.mask_path(relative)
                if mask_path is None:
                    report.unlabeled.append(relative)
                else:
                    target = labels.read(mask_path, path, predicted.shape)
                    confusion_update(confusion, target, predicted, info.ignore_index)
                    report.scored += 1
            if cvat is not None:
                original = (path.read_bytes(), path.suffix) if cfg.cvat_images else None
                cvat.add(relative.with_suffix("").as_posix(), predicted, image=original)
            written += 1
    seconds = time.perf_counter() - start

    for note, count in sorted(report.conversions.items()):
        _say(f"{count} image(s) {note}, as in training")
    if report.unreadable:
        listed = ", ".join(str(p) for p, _ in report.unreadable[:10])
        _say(f"skipped {len(report.unreadable)} unreadable file(s): {listed}")
    summary: dict[str, Any] = {
        "images": written,
        "seconds": seconds,
        "images_per_second": written / seconds if seconds > 0 else math.nan,
        "output": str(output),
        "unreadable": [str(p) for p, _ in report.unreadable],
    }
    if cvat is not None:
        summary["cvat_export"] = str(cvat.path)
    if labels is not None:
        summary["metrics"] = _score(confusion, info, labels, report, output)
    return summary


def _score(
    confusion: np.ndarray, info: ModelInfo, labels: LabelFiles, report: Report, output: Path
) -> dict[str, Any]:
    """Print and write (metrics.json, confusion.csv/.png) the scores of the labelled images."""
    if not report.scored and report.unlabeled:
        raise DatasetError(
            f"labels: no predicted image has a mask under {labels.masks} (looked for "
            f"{report.unlabeled[0].with_suffix('.png')}, ...); masks must mirror the input paths"
        )
    if report.unlabeled:
        listed = ", ".join(p.as_posix() for p in report.unlabeled[:10])
        _say(f"labels: {len(report.unlabeled)} image(s) without a mask are not scored: {listed}")
    if labels.not_in_model:
        names = ", ".join(lb.name for lb in labels.not_in_model)
        _say(f"labels: pixels of labels the model does not predict are not scored: {names}")
    metrics = metrics_from_confusion(torch.from_numpy(confusion), info.names)
    print(format_table(metrics, info.names, prefix=""))
    write_confusion(torch.from_numpy(confusion), info.names, output / "confusion")
    result: dict[str, Any] = {k: None if math.isnan(v) else v for k, v in metrics.items()}
    result["scored_images"] = report.scored
    result["unscored_images"] = [p.as_posix() for p in report.unlabeled]
    (output / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def summary_line(summary: dict[str, Any]) -> str:
    return (
        f"Predicted {summary['images']} image(s) in {summary['seconds']:.1f} s "
        f"({summary['images_per_second']:.1f} images/s)"
    )


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _say(message: str) -> None:
    print(f"[seglab] {message}")
