"""Build an smp encoder-decoder from plain config, with errors a user can act on."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from torch import nn


class ModelConfigError(ValueError):
    """An architecture or encoder name smp does not know."""


def create_model(
    arch: str,
    classes: int,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """`smp.create_model` that names the valid choices and explains failed weight downloads."""
    archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in archs:
        raise ModelConfigError(
            f"model.arch={arch!r} is not an smp architecture; choose one of {archs}"
        )
    encoders = smp.encoders.get_encoder_names()
    if encoder_name not in encoders:
        raise ModelConfigError(
            f"model.encoder_name={encoder_name!r} is not an smp encoder; choose one of {encoders}"
        )
    try:
        return smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=classes,
            **kwargs,
        )
    except OSError as err:  # network, hub and cache failures all derive from OSError
        if encoder_weights is None:
            raise
        raise RuntimeError(
            f"Could not download the {encoder_weights!r} weights for encoder {encoder_name!r} "
            f"({type(err).__name__}: {err}). To train offline from random initialisation, add "
            "model.encoder_weights=null to the command line; or copy the weights into the "
            "Hugging Face / torch hub cache on a machine with internet access."
        ) from err
