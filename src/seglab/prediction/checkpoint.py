"""A checkpoint -> the network in eval mode and its ModelInfo, from the file alone.

The one place prediction, ONNX export and the benchmarks turn a checkpoint into a network, so
that how the network is rebuilt from the hyper-parameters can be changed here only. Only the
network is rebuilt, not the training module: the LightningModule would import Lightning and
torchmetrics, ~250 MiB of resident memory that a huge image's bounded prediction cannot spare
(`benchmarks/huge_slide.py`), for a loss, metrics and optimizer prediction never uses.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import seglab
from seglab.checkpoints import read_checkpoint
from seglab.console import say
from seglab.errors import ConfigError
from seglab.models.factory import check_input_size, model_layout, use_channels_last
from seglab.models.registry import build_model
from seglab.prediction.info import ModelInfo

NETWORK_PREFIX = "net."  # SegmentationModule's network attribute, in its state dict's keys


class TrainedNetwork(nn.Module):
    """A checkpoint's network as `SegmentationModule.forward` runs it: normalised float images
    (N, C, H, W) -> logits (N, classes, H, W). Its state dict has the module's `net.` keys."""

    def __init__(self, net: nn.Module, channels_last: bool):
        super().__init__()
        self.net = net
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(model_layout(images, self.channels_last))


def load_checkpoint(ckpt: str | Path, device: torch.device) -> tuple[TrainedNetwork, ModelInfo]:
    """The trained network in eval mode on `device` and its metadata (weights only)."""
    ckpt = Path(ckpt)
    # Refuses, naming the key, any file whose hyper-parameters are not plain registry configs.
    state = read_checkpoint(ckpt, key="ckpt")
    hparams = state["hyper_parameters"]
    version = str(hparams.get("seglab_version", "unknown"))
    # The trained weights replace the encoder's (never download), and compiling only slows
    # down a prediction run's first images.
    hparams["model"] = {**hparams["model"], "encoder_weights": None, "compile": False}
    try:
        check_input_size(hparams["model"]["arch"], hparams["image_size"])
        net = build_model(hparams["model"], classes=len(hparams["classes"]))
        network = TrainedNetwork(net, use_channels_last(hparams["model"].get("channels_last")))
        weights = {
            name: value
            for name, value in state["state_dict"].items()
            if name.startswith(NETWORK_PREFIX)
        }
        network.load_state_dict(weights)
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
    return network.eval().to(device), ModelInfo.from_hparams(hparams)
