"""LightningModule: smp encoder-decoder, loss, confusion-matrix metrics, optimizer, schedule.

Every constructor argument is plain config (dicts, lists, numbers), so the checkpoint's
hyper-parameters rebuild the model without the training config: prediction needs only `ckpt=`.
They are checked and looked up in seglab's registries (`models.registry`), never imported by
name, so a checkpoint from anyone can describe a network but never run code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

import seglab
from seglab.budget import budget_progress, fit_timer
from seglab.metrics import metrics_from_confusion
from seglab.models.factory import check_input_size, model_layout, use_channels_last
from seglab.models.hparams import check_hparams
from seglab.models.registry import build_loss, build_model, build_optimizer, build_schedulers
from seglab.precision import full_precision
from seglab.preprocessing import class_map, normalise, pixel_statistics, restore_logits


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
        intensity: str | dict[str, list[float]] = "auto",
        sampling: str = "resize",
        upscale: bool = True,
    ):
        """`classes` is a list of `{"name", "color"}` in class-index order; `intensity` is the
        `data.intensity` rule images were read with (`seglab.data.intensity`), stored so that
        prediction reads images the same way. `sampling` is `data.sampling`: with `tile`,
        `image_size` is the training window and evaluation slides it over each image at its
        own resolution (`_slide_logits`), as predict.py's `mode=auto` then does. `upscale` is
        `data.upscale`, stored for prediction's fit (`seglab.preprocessing.fit_size`); its
        default, True, is how checkpoints written before it existed were trained.

        All arguments are checked as plain data first (ConfigError naming the key), and the
        checked copy is what the checkpoint stores.
        """
        super().__init__()
        hparams = check_hparams(
            {"model": model, "loss": loss, "optimizer": optimizer, "classes": classes,
             "scheduler": scheduler, "ignore_index": ignore_index, "image_size": image_size,
             "mean": mean, "std": std, "seglab_version": seglab_version,
             "intensity": intensity, "sampling": sampling, "upscale": upscale}
        )  # fmt: skip
        self.save_hyperparameters(hparams)
        self.class_names = [c["name"] for c in hparams["classes"]]
        check_input_size(hparams["model"]["arch"], hparams["image_size"])
        self.net = build_model(hparams["model"], classes=len(self.class_names))
        self.criterion = build_loss(hparams["loss"])
        self.channels_last = use_channels_last(hparams["model"].get("channels_last", False))
        # Not persistent: the hyper-parameters carry mean and std, the state dict stays the net's.
        pixel_mean, pixel_std = pixel_statistics(mean, std)
        self.register_buffer("pixel_mean", pixel_mean, False)
        self.register_buffer("pixel_std", pixel_std, False)
        self.val_confusion = self._confusion()
        self.test_confusion = self._confusion()

    def _confusion(self) -> MulticlassConfusionMatrix:
        return MulticlassConfusionMatrix(
            num_classes=len(self.class_names),
            ignore_index=self.hparams.ignore_index,
            validate_args=False,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float images (N, 3, H, W) -> logits (N, C, H, W)."""
        return self.net(model_layout(images, self.channels_last))

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """The loaders ship uint8 images and compact masks; normalise and widen on the device."""
        if "image" not in batch:  # sliding-window evaluation: the Predictor normalises tiles
            return {**batch, "mask": batch["mask"].long()}
        images = batch["image"]
        if images.dtype != torch.uint8:
            raise TypeError(
                f"images reach the model as {images.dtype}, not uint8: seglab normalises them on "
                "the device with data.mean and data.std, so augmentation.train must keep uint8 "
                "images (remove Normalize / ToFloat from it)"
            )
        images = normalise(images, self.pixel_mean, self.pixel_std)
        return {**batch, "image": images, "mask": batch["mask"].long()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self._loss(logits, batch["mask"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, list[torch.Tensor]]:
        with full_precision(self.device):
            return self._evaluate_step(batch, self.val_confusion, "val")

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, list[torch.Tensor]]:
        with full_precision(self.device):
            return self._evaluate_step(batch, self.test_confusion, "test")

    def confusion_matrix(self, stage: str) -> torch.Tensor:
        """The `val` or `test` epoch's confusion matrix (rows true, columns predicted), summed
        over all DDP ranks, so call it on every rank. It stays readable after the epoch ends
        (the callbacks' epoch-end hooks run before or after the module's, by Lightning's
        choice) and is reset when the stage's next epoch starts."""
        return getattr(self, f"{stage}_confusion").compute()

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _evaluate_step(
        self, batch: dict[str, torch.Tensor], confusion: MulticlassConfusionMatrix, stage: str
    ) -> dict[str, list[torch.Tensor]]:
        """Metrics at each image's own resolution: the logits of its fitted region are resized
        back to the image's size before the argmax (`restore_logits`, as predict.py does), and
        compared with the untouched mask. Always in float32 (`full_precision`), whatever
        `trainer.precision` trained with: the scores are those of the float32 forward pass
        that predict.py runs by default, so train.py's test equals predict.py's exactly.

        Returns each image's class-index prediction at its own size, which Lightning hands to
        the callbacks' `on_*_batch_end` (the report's per-image scores read them there).

        A `data.sampling=tile` batch (`seglab.data.tiles.SlideCollate`) holds whole images
        instead, whose logits come from sliding windows (`_slide_logits`)."""
        sizes = batch["size"].tolist()
        if "images" in batch:
            restored_logits = self._slide_logits(batch["images"])
        else:
            logits, fitted = self(batch["image"]), batch["fitted"].tolist()
            restored_logits = [
                restore_logits(logits[i], region, size)
                for i, (size, region) in enumerate(zip(sizes, fitted, strict=True))
            ]
        losses, predictions = [], []
        for i, size in enumerate(sizes):
            restored = restored_logits[i][None]
            target = batch["mask"][i : i + 1, : size[0], : size[1]]
            losses.append(self._loss(restored, target))
            predictions.append(class_map(restored[0]))
            confusion.update(predictions[-1][None], target)
        loss = torch.stack(losses).mean()
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(sizes))
        return {"predictions": predictions}

    def _slide_logits(self, images: list[Any]) -> list[torch.Tensor]:
        """Each uint8 (H, W, C) image's logits at its own size by predict.py's `mode=slide`:
        the Predictor's one slide algorithm, its default overlap, windows of `image_size`, in
        float32 (the Predictor runs without autocast unless told, as predict.py does)."""
        from seglab.prediction.info import ModelInfo
        from seglab.prediction.predictor import Predictor

        info = ModelInfo.from_hparams(dict(self.hparams))
        return Predictor(self, info, self.device, mode="slide").logits(images)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss in float32 even under 16-mixed/bf16-mixed: softmax sums in Dice, Lovász's
        sorted cumulative sums and focal's (1 - p)^gamma lose too much precision in half."""
        with full_precision(self.device):
            return self.criterion(logits.float(), target)

    def _log_epoch_metrics(self, stage: str) -> None:
        matrix = self.confusion_matrix(stage)
        metrics = metrics_from_confusion(matrix, self.class_names)
        self.log(f"{stage}/mIoU", metrics.pop("mIoU"), prog_bar=True)
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()})

    def configure_optimizers(self) -> Any:
        """Param groups from `optimizer.encoder_lr_mult`; the schedule decides its own interval."""
        optimizer = build_optimizer(self.hparams.optimizer, self.net)
        if not self.hparams.scheduler:
            return optimizer
        trainer = self.trainer
        if fit_timer(trainer) is not None:  # a time budget: the schedule follows the clock
            estimated = trainer.estimated_stepping_batches
            total = int(estimated) if math.isfinite(estimated) else None
            clock = partial(budget_progress, trainer)
            return [optimizer], build_schedulers(self.hparams.scheduler, optimizer, total, clock)
        total_steps = int(trainer.estimated_stepping_batches)
        return [optimizer], build_schedulers(self.hparams.scheduler, optimizer, total_steps)
