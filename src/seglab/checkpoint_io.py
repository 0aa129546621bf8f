"""Checkpoints written atomically beside their final name.

Lightning writes to a temporary file under `$TMPDIR` and moves it over the target; on another
filesystem that move is a copy, and a killed copy truncates `last.ckpt`, the one file a resume
needs. `AtomicCheckpointIO` writes beside the target and renames (`seglab.atomic`). Reading is
`seglab.checkpoints`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from seglab.atomic import atomic_path, remove_stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a partial file in their own folder, flushed to disk and renamed
    over the target: a kill or a full disk mid-save leaves the previous checkpoint intact,
    whatever filesystem `$TMPDIR` is on. Partial files of killed saves are removed at the next
    save into the folder. Remote paths (s3://...) keep Lightning's own writer."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path.parent)
        with atomic_path(path, fsync=True) as partial, partial.open("wb") as file:
            torch.save(checkpoint, file)
