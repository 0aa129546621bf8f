"""Build an smp encoder-decoder from plain config, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

TIMM_PREFIX = "tu-"  # smp's prefix for any timm backbone, e.g. tu-vit_tiny_patch16_224


class ModelConfigError(ValueError):
    """An architecture or encoder name smp does not know."""


def create_model(
    arch: str,
    classes: int,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 3,
    freeze_encoder: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    sync_batchnorm: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """`smp.create_model` that names the valid choices and explains failed weight downloads.

    `freeze_encoder` also keeps the encoder's normalisation statistics fixed (smp's own freeze);
    `channels_last` and `compile` are speed options that leave the state dict unchanged.
    `sync_batchnorm` is carried out by the Trainer (`trainer.sync_batchnorm` follows it), which
    swaps the layers only when several processes train.
    """
    check_names(arch, encoder_name)
    try:
        model = smp.create_model(
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
    if freeze_encoder:
        model.freeze_encoder()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()  # in place: parameter names, hence checkpoints, stay the same
    return model


# Architectures that fail on small inputs, with the smallest side they accept.
MIN_INPUT_SIZE = {"pan": 128}  # its attention pyramid halves the 1/16 feature map 3 times


def check_input_size(arch: str, image_size: Sequence[int]) -> None:
    """Refuse at start-up an input size the network would only reject at its first batch."""
    smallest = MIN_INPUT_SIZE.get(arch.lower(), 0)
    if min(image_size) < smallest:
        raise ModelConfigError(
            f"model.arch={arch} needs inputs of at least {smallest}x{smallest} but "
            f"data.image_size={list(image_size)}; raise data.image_size or pick another model"
        )


def check_names(arch: str, encoder_name: str) -> None:
    """Fail before any weights are built, listing what would have been accepted."""
    archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in archs:
        raise ModelConfigError(
            f"model.arch={arch!r} is not an smp architecture; choose one of {archs}"
        )
    if encoder_name.startswith(TIMM_PREFIX):
        import timm

        if not timm.is_model(encoder_name.removeprefix(TIMM_PREFIX)):
            raise ModelConfigError(
                f"model.encoder_name={encoder_name!r}: timm has no model "
                f"{encoder_name.removeprefix(TIMM_PREFIX)!r}; list them with "
                "python -c 'import timm; print(timm.list_models())'"
            )
        return
    encoders = smp.encoders.get_encoder_names()
    if encoder_name not in encoders:
        raise ModelConfigError(
            f"model.encoder_name={encoder_name!r} is not an smp encoder; choose one of "
            f"{encoders}, or any timm model as 'tu-<name>'"
        )
