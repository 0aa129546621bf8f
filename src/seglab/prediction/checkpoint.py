"""A checkpoint -> the network in eval mode and its ModelInfo, from the file alone.

The one place prediction, ONNX export and the benchmarks turn a checkpoint into a network, so
that how the module is rebuilt from the hyper-parameters can be changed here only.
"""

from __future__ import annotations

from pathlib import Path

import torch

import seglab
from seglab.checkpoints import read_checkpoint
from seglab.console import say
from seglab.errors import ConfigError
from seglab.prediction.info import ModelInfo


def load_checkpoint(ckpt: str | Path, device: torch.device) -> tuple[torch.nn.Module, ModelInfo]:
    """The SegmentationModule in eval mode on `device` and its metadata (weights only)."""
    from seglab.models.module import SegmentationModule

    ckpt = Path(ckpt)
    # Refuses, naming the key, any file whose hyper-parameters are not plain registry configs.
    state = read_checkpoint(ckpt, key="ckpt")
    hparams = state["hyper_parameters"]
    version = str(hparams.get("seglab_version", "unknown"))
    # The trained weights replace the encoder's (never download), and compiling only slows
    # down a prediction run's first images.
    hparams["model"] = {**hparams["model"], "encoder_weights": None, "compile": False}
    try:
        module = SegmentationModule(**hparams)
        module.load_state_dict(state["state_dict"])
    except Exception as err:
        raise ConfigError(
            f"{ckpt}: written by seglab {version}, which this seglab {seglab.__version__} cannot "
            f"rebuild ({type(err).__name__}: {err}). Predict with the seglab version that trained "
            "it, or retrain"
        ) from err
    if version != seglab.__version__:
        say(
            f"note: {ckpt.name} was written by seglab {version}; this is "
            f"{seglab.__version__}. It loaded; compare a few predictions if in doubt"
        )
    return module.eval().to(device), ModelInfo.from_hparams(hparams)
