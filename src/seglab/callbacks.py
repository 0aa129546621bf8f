"""Lightning callbacks of seglab's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from seglab.data.channels import display_rgb
from seglab.metrics import write_confusion
from seglab.preprocessing import (
    class_map,
    denormalise,
    pixel_statistics,
    resize_image,
    restore_logits,
)


class WandbPredictions(L.Callback):
    """Each validation epoch, W&B gets a few images with ground-truth and predicted masks
    (overlays with class names in the dashboard) and a per-class IoU / Dice / accuracy table.

    Does nothing without `logger=wandb`, so it can stay in the default callbacks.
    """

    def __init__(self, num_images: int = 4):
        self.num_images = num_images
        self._batch: dict[str, Any] | None = None
        self._predictions: list[torch.Tensor] = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and _wandb_logger(trainer) and trainer.is_global_zero:
            n = self.num_images
            self._batch = {key: value[:n] for key, value in batch.items()}  # views, no copies
            # data.sampling=tile batches hold whole images, predicted by sliding windows: the
            # module's predictions are kept rather than recomputed
            self._predictions = [p.detach() for p in (outputs or {}).get("predictions", [])[:n]]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        import wandb

        hp = pl_module.hparams
        names = [c["name"] for c in hp.classes]
        metrics = trainer.callback_metrics
        rows = [
            [name, *(_value(metrics.get(f"val/{kind}/{name}")) for kind in ("iou", "dice", "acc"))]
            for name in names
        ]
        log: dict[str, Any] = {
            "val/per_class": wandb.Table(columns=["class", "IoU", "Dice", "Acc"], data=rows)
        }
        if self._batch is not None:
            log["val/predictions"] = self._images(pl_module, names)
            self._batch = None
        logger.experiment.log({**log, "trainer/global_step": trainer.global_step})

    def _images(self, pl_module: L.LightningModule, names: list[str]) -> list[Any]:

        hp = pl_module.hparams
        batch = self._batch
        labels = dict(enumerate(names)) | {int(hp.ignore_index): "ignored"}
        if "images" in batch:
            return [
                _overlay(display_rgb(image), batch["mask"][i, : image.shape[0], : image.shape[1]],
                         self._predictions[i], labels)
                for i, image in enumerate(batch["images"])
            ]  # fmt: skip
        with torch.no_grad():
            logits = pl_module(batch["image"].to(pl_module.device))
        canvases = denormalise(batch["image"].cpu(), *pixel_statistics(hp.mean, hp.std))
        out = []
        sizes, fitted_sizes = batch["size"].tolist(), batch["fitted"].tolist()
        for i, (size, region) in enumerate(zip(sizes, fitted_sizes, strict=True)):
            # The image, truth and prediction at the image's own size, as the metrics see them.
            pred = class_map(restore_logits(logits[i], region, size)).cpu().numpy()
            fitted = canvases[i, :, : region[0], : region[1]].permute(1, 2, 0).numpy()
            rgb = display_rgb(resize_image(fitted, size))  # first three bands of N
            out.append(_overlay(rgb, batch["mask"][i, : size[0], : size[1]], pred, labels))
        return out


def _overlay(rgb: Any, truth: torch.Tensor, pred: Any, labels: dict[int, str]) -> Any:
    """A W&B image with its true and predicted masks, at the image's own size."""
    import wandb

    pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else pred
    return wandb.Image(
        rgb,
        masks={
            "ground_truth": {"mask_data": truth.cpu().numpy(), "class_labels": labels},
            "prediction": {"mask_data": pred, "class_labels": labels},
        },
    )


def _wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def _value(metric: Any) -> float | None:
    return None if metric is None else float(metric)


class ConfusionFiles(L.Callback):
    """`confusion_val.csv/png` and `confusion_test.csv/png` in `dirpath`: the confusion matrix of
    each `trainer.validate` / `trainer.test` run, i.e. of the checkpoint a run is judged by.

    The validation epochs inside `fit` (and its sanity check) are skipped: their matrices
    describe intermediate weights, and drawing a heat map every epoch costs time.
    """

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking or trainer.state.fn not in (
            TrainerFn.VALIDATING,
            TrainerFn.TESTING,
        ):
            return
        matrix = pl_module.confusion_matrix(stage)  # on every rank: it is summed across them
        if trainer.is_global_zero:
            names = list(pl_module.class_names)
            write_confusion(matrix.cpu(), names, self.dirpath / f"confusion_{stage}")
