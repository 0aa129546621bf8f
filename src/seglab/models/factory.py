"""Build an smp encoder-decoder from plain config, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from hydra.utils import to_absolute_path
from torch import nn

from seglab.console import say
from seglab.errors import ConfigError
from seglab.models.fine_stage import set_decoder_output_stride

TIMM_PREFIX = "tu-"  # smp's prefix for any timm backbone, e.g. tu-vit_tiny_patch16_224


class ModelConfigError(ConfigError):
    """An architecture or encoder name smp does not know."""


def create_model(
    arch: str,
    classes: int,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 3,
    freeze_encoder: bool = False,
    channels_last: bool | str | None = None,
    compile: bool = False,
    decoder_output_stride: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """`smp.create_model` that names the valid choices and explains failed weight downloads.

    `encoder_weights`: `imagenet` (or another smp name; downloaded once), null (random), or a
    local `.pth` / `.pt` / `.safetensors` file holding the encoder's state dict, for machines
    without internet (`load_encoder_weights`).

    `freeze_encoder` also keeps the encoder's normalisation statistics fixed (smp's own freeze);
    `decoder_output_stride`: null keeps smp's architecture; 2 adds a stride-2 stage to a
    decoder that predicts at 1/4 scale, 1 a full-resolution one after it (`fine_stage`), for
    finer outlines.
    `channels_last` (true, false, or `auto`: on when CUDA is available, see
    `use_channels_last`) and `compile` are speed options that leave the state dict unchanged.
    Synchronised batch norm across processes is the Trainer's `trainer.sync_batchnorm`.
    """
    check_names(arch, encoder_name)
    weights_file = encoder_weights if is_weights_file(encoder_weights) else None
    if weights_file:
        encoder_weights = None  # built at random, then the file's weights replace the encoder's
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
    set_decoder_output_stride(model, decoder_output_stride, arch)
    if weights_file:
        load_encoder_weights(model.encoder, weights_file, encoder_name)
    if freeze_encoder:
        model.freeze_encoder()
    if use_channels_last(channels_last):
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()  # in place: parameter names, hence checkpoints, stay the same
    return model


def use_channels_last(option: bool | str | None) -> bool:
    """`model.channels_last`: true, false, or `auto` = on when CUDA is available.

    NHWC is the fast layout for convolutions on NVIDIA GPUs under mixed precision; on CPUs it
    depends on the chip (U-Net ResNet-34 trained 1.2x faster with it on one 2-core machine and
    U-Net ResNet-18 0.85x as fast on another), so `auto` leaves CPUs on the default layout.
    """
    if option == "auto":
        return torch.cuda.is_available()
    if not isinstance(option, bool | None):
        raise ConfigError(f"model.channels_last={option!r}: give true, false or auto")
    return bool(option)


def model_layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images in the memory layout the network was built for (`use_channels_last`)."""
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


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


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# Keys of a classifier's head that an encoder does not have: left out, with a note.
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "_fc.")


def is_weights_file(value: object) -> bool:
    """A path rather than a name such as `imagenet`: a weights suffix, or a folder in it."""
    return isinstance(value, str) and (
        value.lower().endswith(WEIGHT_SUFFIXES) or "/" in value or "\\" in value
    )


def load_encoder_weights(encoder: nn.Module, path: str, encoder_name: str) -> None:
    """Load a local encoder state dict, read as data only (safetensors, or torch's
    weights_only loader), so that air-gapped machines start from pretrained weights.

    Accepted: the encoder's own state dict (`torch.save(model.encoder.state_dict(), f)`), a
    whole smp model's (keys `encoder.*`), or a classification network's whose head (`fc.*`,
    `classifier.*`, ...) is left out. RGB weights for an encoder of other `in_channels` have
    their first convolution adapted (`adapt_first_conv`). Any other missing, unexpected or
    mis-shaped key is an error naming the keys.
    """
    file = Path(to_absolute_path(path))
    where = f"model.encoder_weights={path}"
    if not file.is_file():
        raise ConfigError(
            f"{where}: no such file. Give a .pth or .safetensors file of {encoder_name!r} "
            "encoder weights (README: Pretrained weights without internet), imagenet, or null"
        )
    try:
        if file.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file: never fall back to unpickling it
        raise ConfigError(
            f"{where}: not a readable state dict ({type(err).__name__}: {str(err)[:200]}). "
            "Save one with torch.save(model.encoder.state_dict(), path) or as .safetensors"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{where}: expected a dict of tensors (a state dict)")
    if state and all(k.startswith("encoder.") for k in state if not k.startswith("decoder")):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    expected = encoder.state_dict()
    head = sorted(k for k in state if k not in expected and k.startswith(HEAD_PREFIXES))
    state = {k: v for k, v in state.items() if k not in head}
    adapted = adapt_first_conv(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} (encoder: {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", shapes),
        )
        if keys
    ]
    if problems:
        raise ConfigError(
            f"{where} does not fit encoder {encoder_name!r}: " + "; ".join(problems) + ". Save "
            f"the weights of the same encoder (model.encoder_name={encoder_name}) with "
            "torch.save(model.encoder.state_dict(), path)"
        )
    encoder.load_state_dict(state)
    note = f" (classification head left out: {', '.join(head)})" if head else ""
    if adapted:
        channels = expected[adapted].shape[1]
        note += f" ({adapted} adapted from 3 input channels to {channels}, as smp adapts)"
    say(f"encoder {encoder_name!r}: loaded {len(state)} tensors from {file}{note}")


def adapt_first_conv(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> str | None:
    """Adapt, in `state`, the one 3-input-channel convolution weight that the encoder expects
    with another input count, exactly as smp adapts pretrained weights it downloads
    (`segmentation_models_pytorch.encoders._utils.patch_first_conv`), so that a local weights
    file starts an N-channel model as `encoder_weights=imagenet` would: for 1 channel the RGB
    kernels summed (a grey image then gives the response RGB weights give a grey RGB image);
    for N channels the RGB kernels repeated cyclically and scaled by 3/N (the summed response
    keeps its size). Returns the adapted key, or None (nothing to adapt)."""
    candidates = [
        key
        for key, value in state.items()
        if key in expected
        and value.ndim == 4
        and value.shape[1] == 3
        and expected[key].shape[1] != 3
        and value.shape[0] == expected[key].shape[0]
        and value.shape[2:] == expected[key].shape[2:]
    ]
    if len(candidates) != 1:
        return None  # none, or ambiguous: the shape check names the keys
    key = candidates[0]
    weight, channels = state[key], expected[key].shape[1]
    if channels == 1:
        state[key] = weight.sum(1, keepdim=True)
    else:
        repeated = weight[:, [i % 3 for i in range(channels)]]
        state[key] = repeated * (3 / channels)
    return key
