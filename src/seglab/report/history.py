"""The training curves a run's report draws, recorded whatever logger runs (or none).

`TrainingHistory` writes `<run_dir>/history.json` after every validation epoch:

- `steps`: `[step, epoch, train loss, learning rate]` every `trainer.log_every_n_steps`
  optimizer steps (the loss of that batch, the first parameter group's rate);
- `epochs`: per validation during `fit`: epoch, step, the epoch's mean training loss, val/loss
  and val/mIoU of the weights at that point.

The CSV and W&B loggers hold the same numbers, but in their own layouts and only when they run;
the report must also work with `logger=none`, and rebuilding it (`seglab report RUN_DIR`) must
need nothing but the run directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from seglab.atomic import atomic_write_text

HISTORY_FILE = "history.json"


class TrainingHistory(L.Callback):
    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / HISTORY_FILE
        self.steps: list[list[float | int | None]] = []
        self.epochs: list[dict[str, float | int | None]] = []
        self._train_losses: list[torch.Tensor] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._train_losses.append(loss.detach())  # kept on the device: no sync per step
        step = trainer.global_step
        if trainer.is_global_zero and step % max(1, trainer.log_every_n_steps) == 0:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            self.steps.append([step, trainer.current_epoch, _number(loss), lr])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the epoch's metrics are computed and logged (in `on_validation_epoch_end`
        this callback could run before the module logs them, and read the previous epoch's)."""
        fitting = trainer.state.fn == TrainerFn.FITTING
        if trainer.sanity_checking or not fitting or not trainer.is_global_zero:
            return
        losses = self._train_losses
        metrics = trainer.callback_metrics
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "train_loss": _number(torch.stack(losses).mean()) if losses else None,
                "val_loss": _number(metrics.get("val/loss")),
                "val_mIoU": _number(metrics.get("val/mIoU")),
            }
        )
        self._train_losses = []
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"steps": self.steps, "epochs": self.epochs}) + "\n"
        atomic_write_text(self.path, text)

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints, so that a resumed run's curves start where they stopped."""
        return {"steps": self.steps, "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = list(state_dict.get("steps", []))
        self.epochs = list(state_dict.get("epochs", []))


def read_history(run_dir: Path) -> dict[str, list[Any]]:
    """`history.json` of a run directory; empty curves when the run wrote none."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return {"steps": [], "epochs": []}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"steps": data.get("steps", []), "epochs": data.get("epochs", [])}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
