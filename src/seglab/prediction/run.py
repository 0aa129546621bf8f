"""predict.py's work: find the input images, predict them in batches, write the outputs, and
optionally score them against labels and package them as a CVAT export to import back.

`run(cfg)` takes the composed `conf/predict/predict.yaml`; the pieces it joins are importable
alone (inputs, predictor, writers, scoring).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from seglab.atomic import remove_stale
from seglab.console import say
from seglab.data.channels import ChannelMismatch
from seglab.errors import ConfigError
from seglab.prediction.inputs import ImageFiles, check_output_names, find_inputs, loader_workers
from seglab.prediction.load import load_predictor
from seglab.prediction.pipeline import OrderedWriter, prefetched
from seglab.prediction.predictor import Predictor, to_labels
from seglab.prediction.scoring import LabelFiles, Scoring
from seglab.prediction.writers import MaskWriter, cvat_zip

FORMATS = (None, "cvat")


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
            raise ConfigError("backend=torch needs ckpt=PATH (a checkpoint written by train.py)")
        return load_predictor(to_absolute_path(str(cfg.ckpt)), cfg.device, amp=cfg.amp, **options)
    if cfg.backend == "onnx":
        from seglab.prediction.onnx import load_onnx_predictor

        if not cfg.model:
            raise ConfigError("backend=onnx needs model=PATH (an .onnx file from `seglab export`)")
        if cfg.amp:
            raise ConfigError("amp=true applies to backend=torch; an ONNX model runs as exported")
        return load_onnx_predictor(to_absolute_path(str(cfg.model)), cfg.device, **options)
    raise ConfigError(f"backend={cfg.backend!r}: choose torch or onnx")


@dataclass
class Report:
    """What happened to the inputs besides being predicted: nothing is left out unsaid."""

    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    conversions: Counter[str] = field(default_factory=Counter)


def predict_images(
    predictor: Predictor,
    paths: Sequence[Path],
    num_workers: int | str,
    report: Report,
    progress: bool = True,
) -> Iterator[tuple[Path, np.ndarray, torch.Tensor]]:
    """(path, RGB image, logits at its size) per readable image, decoded and prepared by
    loader workers and predicted in batches; unreadable files go into `report`, skipped."""
    info = predictor.info
    dataset = ImageFiles(paths, predictor.preparer, info.reader, info.in_channels)
    loader = DataLoader(
        dataset,
        batch_size=predictor.batch_size,
        num_workers=loader_workers(num_workers, predictor.device),
        collate_fn=list,
    )
    batches = loader if loader.num_workers else prefetched(loader)
    with _progress(progress) as bar:
        task = bar.add_task("predict", total=len(dataset))
        for batch in batches:
            ready = []
            for item in batch:
                path = dataset.paths[item["index"]]
                if item.get("fatal"):
                    raise ChannelMismatch(item["error"])
                if "error" in item:
                    report.unreadable.append((path, item["error"]))
                    bar.console.print(f"[seglab] skipped unreadable {item['error']}")
                    continue
                ready.append((path, item["image"]))
                if item["note"]:
                    report.conversions[item["note"]] += 1
            if ready:
                logits = predictor.logits([prepared for _, prepared in ready])
                for (path, prepared), image_logits in zip(ready, logits, strict=True):
                    yield path, prepared.image, image_logits
            bar.advance(task, len(batch))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict every input image; returns the summary (and metrics with `labels=`)."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r}: choose null or cvat")
    output = Path(to_absolute_path(str(cfg.output)))
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"output={output} is an existing file; give a folder")
    predictor = build_predictor(cfg)
    info = predictor.info
    inputs = find_inputs(to_absolute_path(str(cfg.input)))
    check_output_names(inputs)
    bands = cfg.get("overlay_bands")
    writer = MaskWriter(
        output, list(cfg.outputs), info, float(cfg.overlay_alpha), list(bands) if bands else None
    )
    labels = LabelFiles(to_absolute_path(str(cfg.labels)), info) if cfg.labels else None
    scoring = Scoring(labels, info) if labels is not None else None
    output.mkdir(parents=True, exist_ok=True)
    remove_stale(output)  # partial files of a killed earlier run (the zip, metrics.json)
    if inputs.left_out:
        kinds = " ".join(sorted({p.suffix.lower() or p.name for p in inputs.left_out}))
        say(f"input: left out {len(inputs.left_out)} hidden or non-image file(s) ({kinds})")

    # The zip replaces an earlier one only once complete: a failed run leaves that one whole.
    cvat = cvat_zip(output, info, int(cfg.cvat_min_area)) if cfg.format == "cvat" else None
    report = Report()

    def save(path: Path, image: np.ndarray, predicted: np.ndarray, logits: torch.Tensor) -> None:
        relative = inputs.relative(path)
        writer.write(relative, image, predicted, logits)
        if scoring is not None:
            scoring.add(relative, path, predicted)
        if cvat is not None:
            original = (path.read_bytes(), path.suffix) if cfg.cvat_images else None
            cvat.add(relative.with_suffix("").as_posix(), predicted, image=original)

    written = 0
    start = time.perf_counter()
    with cvat or nullcontext():
        saving = OrderedWriter()
        try:
            for path, image, logits in predict_images(
                predictor, inputs.images, cfg.num_workers, report, bool(cfg.progress)
            ):
                predicted = to_labels(logits, predictor.num_classes)
                saving.submit(partial(save, path, image, predicted, logits))
                written += 1
        finally:
            saving.finish()  # every file written (or the first error raised) before the zip closes
    seconds = time.perf_counter() - start

    for note, count in sorted(report.conversions.items()):
        say(f"{count} image(s) {note}, as in training")
    if report.unreadable:
        listed = ", ".join(str(p) for p, _ in report.unreadable[:10])
        say(f"skipped {len(report.unreadable)} unreadable file(s): {listed}")
    summary: dict[str, Any] = {
        "images": written,
        "seconds": seconds,
        "images_per_second": written / seconds if seconds > 0 else math.nan,
        "output": str(output),
        "unreadable": [str(p) for p, _ in report.unreadable],
    }
    if cvat is not None:
        summary["cvat_export"] = str(cvat.path)
        summary["cvat_dropped_regions"] = cvat.report.dropped
        summary["cvat_merged_regions"] = cvat.report.merged
        if cvat.report.dropped:
            say(
                f"cvat export: left out {cvat.report.dropped} region(s) under "
                f"cvat_min_area={cfg.cvat_min_area} px (cvat_min_area=0 keeps them)"
            )
        if cvat.report.merged:
            say(
                f"cvat export: {cvat.report.merged} small region(s) share one instance per "
                "class (CVAT takes at most 255 instances per image); every class pixel is kept"
            )
    if scoring is not None:
        summary["metrics"] = scoring.finish(output)
    return summary


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
