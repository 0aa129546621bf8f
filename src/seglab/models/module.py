"""LightningModule: smp encoder-decoder, loss, confusion-matrix metrics, optimizer, schedule.

Every constructor argument is plain config (dicts, lists, numbers), so the checkpoint's
hyper-parameters rebuild the model without the training config: prediction needs only `ckpt=`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torchmetrics.classification import MulticlassConfusionMatrix

import seglab
from seglab.metrics import metrics_from_confusion
from seglab.models.factory import check_input_size
from seglab.models.optim import param_groups


class SegmentationModule(L.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        classes: Sequence[dict[str, Any]],
        scheduler: dict[str, Any] | None = None,
        ignore_index: int = 255,
        image_size: Sequence[int] = (512, 512),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        seglab_version: str = seglab.__version__,
    ):
        """`classes` is a list of `{"name", "color"}` in class-index order."""
        super().__init__()
        self.save_hyperparameters()
        self.class_names = [c["name"] for c in classes]
        check_input_size(model.get("arch", ""), image_size)
        self.net = instantiate(model, classes=len(classes))
        self.criterion = instantiate(loss)
        # Not persistent: the hyper-parameters carry mean and std, the state dict stays the net's.
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1) * 255, False)
        self.val_confusion = self._confusion()
        self.test_confusion = self._confusion()
        self.last_confusion: dict[str, torch.Tensor] = {}

    def _confusion(self) -> MulticlassConfusionMatrix:
        return MulticlassConfusionMatrix(
            num_classes=len(self.class_names),
            ignore_index=self.hparams.ignore_index,
            validate_args=False,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float images (N, 3, H, W) -> logits (N, C, H, W)."""
        if self.hparams.model.get("channels_last"):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """The loaders ship uint8 images and compact masks; normalise and widen on the device."""
        images = batch["image"]
        if images.dtype != torch.uint8:
            raise TypeError(
                f"images reach the model as {images.dtype}, not uint8: seglab normalises them on "
                "the device with data.mean and data.std, so augmentation.train must keep uint8 "
                "images (remove Normalize / ToFloat from it)"
            )
        images = (images.float() - self.pixel_mean) / self.pixel_std
        return {**batch, "image": images, "mask": batch["mask"].long()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self._loss(logits, batch["mask"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate_step(batch, self.val_confusion, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate_step(batch, self.test_confusion, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_confusion, "val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics(self.test_confusion, "test")

    def _evaluate_step(
        self, batch: dict[str, torch.Tensor], confusion: MulticlassConfusionMatrix, stage: str
    ) -> None:
        logits = self(batch["image"])
        loss = self._loss(logits, batch["mask"])
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True)
        confusion.update(logits.argmax(dim=1), batch["mask"])

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss in float32 even under 16-mixed/bf16-mixed: softmax sums in Dice, Lovász's
        sorted cumulative sums and focal's (1 - p)^gamma lose too much precision in half."""
        with torch.autocast(self.device.type, enabled=False):
            return self.criterion(logits.float(), target)

    def _log_epoch_metrics(self, confusion: MulticlassConfusionMatrix, stage: str) -> None:
        matrix = confusion.compute()  # summed over all DDP ranks
        confusion.reset()
        self.last_confusion[stage] = matrix.cpu()
        metrics = metrics_from_confusion(matrix, self.class_names)
        self.log(f"{stage}/mIoU", metrics.pop("mIoU"), prog_bar=True)
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()})

    def configure_optimizers(self) -> Any:
        """Param groups from `optimizer.encoder_lr_mult`; the schedule decides its own interval."""
        config = dict(self.hparams.optimizer)
        encoder_lr_mult = float(config.pop("encoder_lr_mult", 1.0))
        groups = param_groups(
            self.net, config["lr"], config.get("weight_decay", 0.0), encoder_lr_mult
        )
        # Partial, then called: instantiate would turn the groups' dicts into DictConfigs.
        optimizer = instantiate(config, _partial_=True)(groups)
        if not self.hparams.scheduler:
            return optimizer
        schedulers = instantiate(
            self.hparams.scheduler,
            optimizer=optimizer,
            total_steps=int(self.trainer.estimated_stepping_batches),
        )
        return [optimizer], list(schedulers)
