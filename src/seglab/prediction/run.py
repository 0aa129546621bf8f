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
from seglab.data.cvat_writer import CvatWriter
from seglab.data.errors import DatasetError
from seglab.data.images import pillow_limit_off
from seglab.errors import ConfigError
from seglab.prediction.inputs import (
    ImageFiles,
    check_output_names,
    conversion_note,
    find_inputs,
    loader_workers,
)
from seglab.prediction.load import load_predictor
from seglab.prediction.pipeline import OrderedWriter, prefetched
from seglab.prediction.predictor import Predictor, to_labels
from seglab.prediction.scoring import LabelFiles, Scoring
from seglab.prediction.streaming import predict_streamed, read_large_image, streamed
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
        "batch_size": cfg.batch_size,
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
        save_scored(scoring, cvat, cfg, relative, path, predicted)

    large = large_images(cfg, predictor, inputs.images)
    set_of_large = set(large)
    written = 0
    start = time.perf_counter()
    with cvat or nullcontext():
        saving = OrderedWriter()
        try:
            usual = [path for path in inputs.images if path not in set_of_large]
            predicted_usually = (
                predict_images(predictor, usual, cfg.num_workers, report, bool(cfg.progress))
                if usual
                else iter(())
            )
            for path, image, logits in predicted_usually:
                predicted = to_labels(logits, predictor.num_classes)
                saving.submit(partial(save, path, image, predicted, logits))
                written += 1
        finally:
            saving.finish()  # every file written (or the first error raised) before the zip closes
        for path in large:  # one at a time, its outputs streamed as its strips are predicted
            image = read_large(path, predictor, report)
            if image is None:
                continue
            relative = inputs.relative(path)
            keep = scoring is not None or cvat is not None
            with _progress(bool(cfg.progress)) as bar:
                rows = bar.add_task(f"rows of {path.name}", total=image.shape[0])
                predicted = predict_streamed(
                    predictor, image, relative, writer, keep, partial(bar.advance, rows)
                )
            del image
            if predicted is not None:
                save_scored(scoring, cvat, cfg, relative, path, predicted)
            written += 1
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


def save_scored(
    scoring: Scoring | None,
    cvat: CvatWriter | None,
    cfg: DictConfig,
    relative: Path,
    path: Path,
    predicted: np.ndarray,
) -> None:
    """An image's mask into the scores (`labels=`) and the CVAT zip (`format=cvat`)."""
    if scoring is not None:
        scoring.add(relative, path, predicted)
    if cvat is not None:
        original = (path.read_bytes(), path.suffix) if cfg.cvat_images else None
        cvat.add(relative.with_suffix("").as_posix(), predicted, image=original)


def large_images(cfg: DictConfig, predictor: Predictor, paths: Sequence[Path]) -> list[Path]:
    """`mode=slide` images of more than `stream_pixels` pixels (from their headers): predicted
    strip by strip with their outputs streamed (`seglab.prediction.streaming`), so that no
    full-image float logits exist. Refused up front with TTA scales, which need them. Only for
    3-channel models shown as RGB: other channel counts and `overlay_bands` take the usual path."""
    limit = cfg.get("stream_pixels")
    if predictor.mode != "slide" or limit is None:
        return []
    if predictor.info.in_channels != 3 or cfg.get("overlay_bands") is not None:
        return []
    if int(limit) < 1:
        raise ConfigError(f"stream_pixels={limit}: give a number of pixels, or null for never")
    large = streamed(list(paths), int(limit))
    if large and predictor.scales != (1.0,):
        raise ConfigError(
            f"{large[0]}: {len(large)} image(s) over stream_pixels={limit} pixels are predicted "
            "strip by strip, at their own scale only, but tta.scales="
            f"{list(predictor.scales)}. Give tta.scales=[1.0], or raise stream_pixels (their "
            "whole-image float logits must then fit in memory)"
        )
    return large


def read_large(path: Path, predictor: Predictor, report: Report) -> np.ndarray | None:
    """A large image as RGB uint8 (read as the usual path reads it), or None when unreadable
    (reported)."""
    try:
        image = read_large_image(path, predictor.info.reader)
    except DatasetError as err:
        report.unreadable.append((path, str(err)))
        say(f"skipped unreadable {err}")
        return None
    with pillow_limit_off():
        note = conversion_note(path, predictor.info.reader)
    if note:
        report.conversions[note] += 1
    height, width = image.shape[:2]
    say(f"{path}: {width}x{height}, predicted strip by strip (over stream_pixels)")
    return image


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
