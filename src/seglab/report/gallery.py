"""Which validation images the evaluated checkpoint gets right and wrong, for the run's report.

`ValidationImages` listens to `trainer.validate` (train.py's final validation of the best
checkpoint; the validation epochs inside `fit` describe intermediate weights and are skipped)
and writes into the run directory:

- `val_images.csv`: every validation image with its mIoU (over the classes in its truth or its
  prediction, `seglab.metrics.image_miou`) and pixel accuracy, worst first;
- `gallery/`: the `num_images` worst and best images as PNG strips, image | truth | prediction |
  errors (wrong pixels red, ignored ones grey), and `gallery.json` describing them.

The predictions are the module's own (`validation_step` returns each image's class-index mask
at its own size), so the scores are those of the run's metrics, not of a second inference.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from seglab.atomic import atomic_write_bytes, new_partial_dir, partial_name
from seglab.data.channels import display_rgb
from seglab.metrics import image_miou

GALLERY_DIR = "gallery"
GALLERY_FILE = "gallery.json"
SCORES_FILE = "val_images.csv"
KEEP_SIDE = 512  # kept predictions are shrunk to this long side: memory stays bounded
ERROR_RED = (230, 30, 30)
IGNORED_GREY = (128, 128, 128)

Candidate = tuple[float, int, np.ndarray]  # (mIoU, sample index, prediction)


class ValidationImages(L.Callback):
    def __init__(self, dirpath: str | Path, num_images: int = 6, height: int = 160):
        self.dirpath = Path(dirpath)
        self.num_images = num_images
        self.height = height  # of each panel in a strip, in pixels
        self._reset()

    def _reset(self) -> None:
        self.rows: list[tuple[int, float, float]] = []  # (index, mIoU, pixel accuracy)
        self._worst: list[tuple[float, int, np.ndarray]] = []  # max-heap by mIoU (negated)
        self._best: list[tuple[float, int, np.ndarray]] = []  # min-heap by mIoU

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if not self._active(trainer) or not isinstance(outputs, dict) or "index" not in batch:
            return
        ignore = int(pl_module.hparams.ignore_index)
        classes = len(pl_module.hparams.classes)
        sizes, indices = batch["size"].tolist(), batch["index"].tolist()
        for i, prediction in enumerate(outputs["predictions"]):
            height, width = sizes[i]
            index = indices[i]
            target = batch["mask"][i, :height, :width].cpu().numpy()
            predicted = prediction.cpu().numpy()
            miou = image_miou(target, predicted, classes, ignore)
            valid = target != ignore
            accuracy = (
                float((predicted[valid] == target[valid]).mean()) if valid.any() else math.nan
            )
            self.rows.append((index, miou, accuracy))
            if not math.isnan(miou) and self.num_images > 0:
                self._keep(miou, index, predicted)

    def _keep(self, miou: float, index: int, predicted: np.ndarray) -> None:
        small = _shrink(predicted.astype(np.uint8 if predicted.max() < 256 else np.int32))
        heapq.heappush(self._worst, (-miou, index, small))
        heapq.heappush(self._best, (miou, -index, small))
        if len(self._worst) > self.num_images:
            heapq.heappop(self._worst)
        if len(self._best) > self.num_images:
            heapq.heappop(self._best)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        rows, worst, best = self.rows, self._worst, self._best
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (rows, worst, best))
            rows = [r for part in gathered for r in part[0]]
            worst = [c for part in gathered for c in part[1]]
            best = [c for part in gathered for c in part[2]]
        if not trainer.is_global_zero:
            return
        dataset = trainer.val_dataloaders.dataset
        samples = dataset.samples
        rows.sort(key=lambda r: (math.inf if math.isnan(r[1]) else r[1], r[0]))
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["image", "mIoU", "pixel_acc"])
        writer.writerows([samples[i].id, _rounded(m), _rounded(a)] for i, m, a in rows)
        atomic_write_bytes(self.dirpath / SCORES_FILE, text.getvalue().encode("utf-8"))
        chosen = {
            "worst": sorted(((-m, i, p) for m, i, p in worst), key=lambda c: (c[0], c[1])),
            "best": sorted(((m, -i, p) for m, i, p in best), key=lambda c: (-c[0], c[1])),
        }
        colors = [tuple(c["color"]) for c in pl_module.hparams.classes]
        self._write_gallery(dataset, chosen, colors, int(pl_module.hparams.ignore_index))

    def _write_gallery(
        self, dataset: Any, chosen: dict[str, list[Candidate]], colors: list[tuple[int, ...]],
        ignore: int,
    ) -> None:  # fmt: skip
        """Strips into a fresh folder, swapped in whole: the report never mixes two runs'."""
        target = self.dirpath / GALLERY_DIR
        partial = new_partial_dir(target)
        entries = []
        for kind, candidates in chosen.items():
            for rank, (miou, index, predicted) in enumerate(candidates[: self.num_images], 1):
                image, truth = dataset.load(index)
                strip = gallery_strip(image, truth, predicted, colors, ignore, self.height)
                name = f"{kind}_{rank:02d}.png"
                ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
                if ok:
                    (partial / name).write_bytes(png.tobytes())
                    sample = dataset.samples[index]
                    entries.append({"kind": kind, "rank": rank, "image": sample.id,
                                    "mIoU": round(miou, 4), "file": name})  # fmt: skip
        (partial / GALLERY_FILE).write_text(json.dumps(entries, indent=1) + "\n", "utf-8")
        old = partial_name(target) if target.exists() else None
        if old is not None:
            target.rename(old)  # kept until the new folder is in place
        partial.rename(target)
        if old is not None:
            shutil.rmtree(old)

    def _active(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.state.fn == TrainerFn.VALIDATING


def gallery_strip(
    image: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
    colors: list[tuple[int, ...]], ignore: int, height: int,
) -> np.ndarray:  # fmt: skip
    """RGB panels side by side, `height` pixels high: image | truth | prediction | errors.
    `predicted` may be smaller than the image (kept shrunk); the others are brought to it."""
    size = predicted.shape[:2]
    image = cv2.resize(display_rgb(image), size[::-1], interpolation=cv2.INTER_AREA)
    truth = cv2.resize(truth, size[::-1], interpolation=cv2.INTER_NEAREST)
    ignored = truth == ignore
    errors = (image.astype(np.float32) * 0.35).astype(np.uint8)
    errors[(predicted != truth) & ~ignored] = ERROR_RED
    errors[ignored] = IGNORED_GREY
    panels = [image, _colorize(truth, colors, ignore), _colorize(predicted, colors, ignore), errors]
    width = max(1, round(size[1] * height / size[0]))
    scaled = [cv2.resize(p, (width, height), interpolation=cv2.INTER_NEAREST) for p in panels]
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([x for p in scaled for x in (p, gap)][:-1], axis=1)


def read_gallery(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / GALLERY_DIR / GALLERY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def _colorize(mask: np.ndarray, colors: list[tuple[int, ...]], ignore: int) -> np.ndarray:
    palette = np.zeros((max(len(colors), ignore + 1, int(mask.max()) + 1), 3), np.uint8)
    palette[: len(colors)] = colors
    palette[ignore] = IGNORED_GREY
    return palette[mask]


def _shrink(mask: np.ndarray) -> np.ndarray:
    ratio = KEEP_SIDE / max(mask.shape)
    if ratio >= 1:
        return mask
    size = (max(1, round(mask.shape[1] * ratio)), max(1, round(mask.shape[0] * ratio)))
    return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)


def _rounded(value: float) -> float | str:
    return "" if math.isnan(value) else round(value, 4)
