"""Shared fixtures: tiny real CVAT exports written to temporary folders, and one trained run."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from seglab.demo import write_demo_export
from tests.helpers import TINY, compose_train

# Nothing in the tests may need a network or a login.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nor write an MLflow store into the repository (logger=mlflow's default is ./mlflow.db).
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "tiny"
    return write_demo_export(path, size=64, seed=1, splits={"train": 4, "val": 3, "test": 2})


@pytest.fixture(scope="session")
def trained_run(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real 1-epoch training run on the tiny export, for the tests that need a checkpoint."""
    from seglab.training import run

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train(
        [*TINY, f"data.path={tiny_export}", f"run_dir={run_dir}", "trainer.max_epochs=1"]
    )
    metrics = run(cfg)
    return {
        "export": tiny_export,
        "run_dir": run_dir,
        "metrics": metrics,
        "metrics_json": json.loads((run_dir / "metrics.json").read_text()),
    }
