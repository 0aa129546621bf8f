"""Checkpoint files: read as data and refused unless they hold what seglab writes.

Reading: `torch.load(weights_only=True)` unpickles tensors and plain containers only, and the
hyper-parameters are then checked key by key (`models.hparams`) before anything is built from
them. A file that fails either check is not a seglab checkpoint, and is said to be one: never
would seglab suggest loading it with `weights_only=False`, which runs whatever it contains.

Writing is `seglab.checkpoint_io`. This module imports neither Lightning nor torchmetrics, so
that prediction, which only reads checkpoints, does not pay their ~250 MiB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from seglab.errors import ConfigError, MissingFileError, UserError
from seglab.models.hparams import REQUIRED, check_hparams


class CheckpointError(UserError, ValueError):
    """A file that is not a checkpoint seglab wrote, or that seglab refuses to rebuild."""


def read_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """The checkpoint at `path` with its hyper-parameters checked and made plain data.

    `key` is the option that named the file (`ckpt`, `ckpt_path`), for the messages.
    """
    given, path = str(path), Path(path)  # the given text: Path() would fold a URL's "//"
    if "://" in given or not path.is_file():
        raise MissingFileError(f"{key}={given}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # `from None`: torch's own message advises weights_only=False, i.e. running the file.
        raise CheckpointError(
            f"{path}: not a readable seglab checkpoint; this file is not a seglab checkpoint "
            f"({_why_unreadable(err)}). Give a .ckpt file written by seglab's train.py "
            "(run_dir/checkpoints/)"
        ) from None
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    hparams = hparams if isinstance(hparams, dict) else {}
    missing = [name for name in REQUIRED if name not in hparams]
    if missing or not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(
            f"{path}: checkpoint lacks seglab metadata {missing or ['state_dict']}; it was not "
            "written by seglab's train.py (or by an incompatible version). Use a checkpoint "
            "from run_dir/checkpoints/ of a seglab training run"
        )
    try:
        state["hyper_parameters"] = check_hparams(hparams)
    except ConfigError as err:
        raise CheckpointError(
            f"{path}: refused: {err}. A seglab checkpoint names its model, loss, optimizer and "
            "schedule by registered keys with plain values, so loading one never runs code; "
            "this one was crafted or written by an incompatible seglab version"
        ) from None
    return state


def _why_unreadable(err: Exception) -> str:
    """What torch's refusal means, in words that never suggest disabling `weights_only`."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if found:
        return (
            f"it holds a Python object, {found.group(1)}, where seglab writes only tensors and "
            "plain values; such objects are never loaded"
        )
    return "it is not a PyTorch checkpoint archive, or it is truncated or corrupt"


def __getattr__(name: str) -> Any:
    """`seglab.checkpoints.AtomicCheckpointIO`, the class's earlier home, as the saved
    `.hydra/config.yaml` of older runs name it; imported only when asked for."""
    if name == "AtomicCheckpointIO":
        from seglab.checkpoint_io import AtomicCheckpointIO

        return AtomicCheckpointIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
