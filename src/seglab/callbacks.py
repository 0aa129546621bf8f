"""Lightning callbacks of seglab's own."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger


class WandbPredictions(L.Callback):
    """Each validation epoch, W&B gets a few images with ground-truth and predicted masks
    (overlays with class names in the dashboard) and a per-class IoU / Dice / accuracy table.

    Does nothing without `logger=wandb`, so it can stay in the default callbacks.
    """

    def __init__(self, num_images: int = 4):
        self.num_images = num_images
        self._batch: dict[str, torch.Tensor] | None = None

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
            self._batch = {"image": batch["image"][:n].detach(), "mask": batch["mask"][:n]}

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
        import wandb

        hp = pl_module.hparams
        images, masks = self._batch["image"], self._batch["mask"]
        with torch.no_grad():
            predicted = pl_module(images.to(pl_module.device)).argmax(dim=1).cpu()
        mean = torch.tensor(hp.mean)[:, None, None]
        std = torch.tensor(hp.std)[:, None, None]
        labels = dict(enumerate(names)) | {int(hp.ignore_index): "ignored"}
        out = []
        for image, truth, pred in zip(images.cpu(), masks.cpu(), predicted, strict=True):
            rgb = ((image.float() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            out.append(
                wandb.Image(
                    rgb,
                    masks={
                        "ground_truth": {"mask_data": truth.numpy(), "class_labels": labels},
                        "prediction": {"mask_data": pred.numpy(), "class_labels": labels},
                    },
                )
            )
        return out


def _wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def _value(metric: Any) -> float | None:
    return None if metric is None else float(metric)
