"""`<run_dir>/run.json`: what a run was (data, classes, model, objective, schedule, budget,
timing), written by train.py at its end so that the report can be rebuilt from the run
directory alone, after the data moved or on another machine."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seglab.atomic import atomic_write_text

FACTS_FILE = "run.json"


def write_run_facts(
    run_dir: Path, cfg: DictConfig, datamodule: Any, hparams: dict[str, Any],
    train: dict[str, Any], wall_seconds: float,
) -> Path:  # fmt: skip
    """`hparams`: the module's checked hyper-parameters (the loss with its class weights as
    numbers); `train`: epochs, steps and seconds of the fit, empty when nothing was trained."""
    scan = getattr(datamodule, "scan_report", None)
    facts = {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": _command(),
        "data": {
            "path": str(datamodule.path),
            "layout": datamodule.export.layout,
            "images": dict(scan.images) if scan else {},
            "pixels": {split: [int(v) for v in px] for split, px in scan.pixels.items()}
            if scan
            else {},
            "image_size": list(datamodule.image_size),
            "crop_size": list(datamodule.crop_size),
            "sampling": datamodule.sampling.sampling,
            "batch_size": datamodule.batch_size,
            "ignored": list(cfg.data.get("ignore_classes") or []),
        },
        "classes": [{"name": c["name"], "color": list(c["color"])} for c in hparams["classes"]],
        "model": hparams["model"],
        "loss": hparams["loss"],
        "optimizer": hparams["optimizer"],
        "scheduler": hparams.get("scheduler"),
        "augmentation": _plain(cfg.get("augmentation")),
        "schedule": {
            "budget": cfg.get("budget"),
            "max_epochs": cfg.trainer.get("max_epochs"),
            "max_time": cfg.trainer.get("max_time"),
            "precision": train.get("precision", cfg.trainer.get("precision")),
            "devices": cfg.trainer.get("devices"),
        },
        "seed": cfg.get("seed"),
        "train": train,
        "wall_seconds": round(wall_seconds, 1),
        "config": _plain(cfg),
    }
    path = Path(run_dir) / FACTS_FILE
    atomic_write_text(path, json.dumps(facts, indent=1, default=str) + "\n")
    return path


def read_run_facts(run_dir: Path) -> dict[str, Any]:
    """run.json, or for a run directory written before it existed, its Hydra config."""
    path = Path(run_dir) / FACTS_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    hydra_config = Path(run_dir) / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        return {"config": OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=False)}
    return {}


def _command() -> str | None:
    """The overrides the run was started with, as the user typed them."""
    if not HydraConfig.initialized():
        return None
    return " ".join(HydraConfig.get().overrides.task)


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node
