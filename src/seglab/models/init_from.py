"""Start a run from another seglab checkpoint's weights: `model.init_from=CKPT`.

This is the next annotation round: the label set may have gained or lost classes since the
checkpoint was trained. Classes are matched by name, never by index:

- a class both label sets have keeps its rows of the classification head (whatever its index);
- a class new to this run keeps the fresh initialisation of its rows;
- a class the checkpoint had and this run has not is dropped.

Everything but the head must match exactly (same `model.arch`, `model.encoder_name` and decoder
options), otherwise the run is refused with the differing keys named. Only weights are taken:
the optimizer and schedule start anew (that is what sets this apart from `ckpt_path=`, which
resumes a run). The file is read as data (`read_checkpoint`): loading it runs no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seglab.checkpoints import read_checkpoint
from seglab.errors import ConfigError

KEY = "model.init_from"
HEAD_PREFIX = "segmentation_head."  # every smp architecture's last block


@dataclass(frozen=True)
class ClassMapping:
    """How the checkpoint's classes become this run's, by name."""

    kept: list[str]  # in both: their head rows are copied
    new: list[str]  # only in this run: fresh rows
    dropped: list[str]  # only in the checkpoint: their rows are left out

    def describe(self) -> str:
        def names(values: list[str]) -> str:
            return ", ".join(values) if values else "none"

        return (
            f"kept {len(self.kept)} ({names(self.kept)}); new {len(self.new)}, trained from "
            f"scratch ({names(self.new)}); dropped {len(self.dropped)} ({names(self.dropped)})"
        )


def source_model(path: str | Path) -> dict:
    """The checkpoint's `model` config, e.g. to build this run's network like it."""
    return dict(read_checkpoint(path, key=KEY)["hyper_parameters"]["model"])


def init_from_checkpoint(net: nn.Module, classes: list[str], path: str | Path) -> ClassMapping:
    """Copy `path`'s network weights into `net` (built for `classes`), matching classes by name."""
    state = read_checkpoint(path, key=KEY)
    hparams = state["hyper_parameters"]
    source_classes = [c["name"] for c in hparams["classes"]]
    source = {
        k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")
    }
    target = net.state_dict()
    _check_same_network(path, source, target, hparams["model"])

    rows = {name: i for i, name in enumerate(source_classes)}
    pairs = [(j, rows[name]) for j, name in enumerate(classes) if name in rows]
    merged = {}
    for key, value in target.items():
        weights = source[key]
        if _is_class_rows(key, weights, len(source_classes)):
            value = value.clone()
            for new_row, old_row in pairs:
                value[new_row] = weights[old_row]
            weights = value
        merged[key] = weights
    net.load_state_dict(merged)
    return ClassMapping(
        kept=[name for name in classes if name in rows],
        new=[name for name in classes if name not in rows],
        dropped=[name for name in source_classes if name not in set(classes)],
    )


def _is_class_rows(key: str, value: torch.Tensor, num_classes: int) -> bool:
    """A head tensor with one row per class (the last convolution's weight and bias)."""
    return key.startswith(HEAD_PREFIX) and value.ndim >= 1 and value.shape[0] == num_classes


def _check_same_network(
    path: str | Path,
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    source_model: dict,
) -> None:
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    mis_shaped = sorted(
        key
        for key in set(source) & set(target)
        if source[key].shape != target[key].shape
        and not (key.startswith(HEAD_PREFIX) and source[key].shape[1:] == target[key].shape[1:])
    )
    if not (missing or unexpected or mis_shaped):
        return
    trained = f"{source_model.get('arch')} / {source_model.get('encoder_name')}"
    problems = [
        f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("differently shaped", mis_shaped),
        )
        if keys
    ]
    inputs = [  # a first convolution of another input count: the images' channels differ
        key for key in mis_shaped
        if source[key].ndim == 4 and source[key].shape[0] == target[key].shape[0]
        and source[key].shape[1] != target[key].shape[1]
    ]  # fmt: skip
    channels = (
        f". Its network takes {source_model.get('in_channels', 3)}-channel images and this "
        f"run's {target[inputs[0]].shape[1]} (model.in_channels, from the data): start from a "
        "model trained on images of this run's channel count"
        if len(inputs) == 1
        else ""
    )
    raise ConfigError(
        f"{KEY}={path}: its network ({trained}) is not the one this run builds: "
        f"{'; '.join(problems)} weights. Use the checkpoint's model.arch, model.encoder_name "
        f"and decoder options (only the classification head may differ){channels}"
    )
