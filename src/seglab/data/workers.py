"""How many loader worker processes `num_workers: auto` means, for training and prediction."""

from __future__ import annotations

import os


def resolve_workers(num_workers: int | str) -> int:
    if num_workers == "auto":
        return min(8, os.cpu_count() or 1)
    return int(num_workers)
