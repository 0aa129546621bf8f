"""Random augmentation that follows `seed` and differs between loader workers.

albumentations 2 keeps its own random generators, seeded when a `Compose` is built and untouched
by `seed_everything`. Left alone, that has two effects (both measured on the datamodule's
loaders): a run cannot be repeated from its `seed`, and every loader worker, forked from the
same parent, draws the same sequence of crops, flips and colour changes as the others, so two
workers give half the variety. Here each worker seeds its copy of the pipeline from the seed
PyTorch gives that worker (distinct per worker, per DDP rank, and derived from `seed` when
there is one), and loading in the main process seeds it from PyTorch's generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import get_worker_info


def seed_augmentation(transform: Any, seed: int) -> None:
    """Reseed an albumentations pipeline (or a `seglab.data.tiles.TileDataset`, which seeds its
    windows and its pipeline); transforms without randomness are left as they are."""
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(seed) % 2**32)


def main_process_seed() -> int:
    """A seed from PyTorch's generator (so from `seed`), different on each DDP rank."""
    drawn = int(torch.randint(0, 2**31 - 1, ()))
    rank = getattr(rank_zero_only, "rank", 0) or 0
    return int(np.random.SeedSequence([drawn, rank]).generate_state(1)[0])


def seed_loader_worker(worker_id: int) -> None:
    """`worker_init_fn`: Lightning's per-worker seeding of torch, numpy and random (worker id
    and rank mixed in), then the worker's augmentation pipeline from the same torch seed."""
    pl_worker_init_function(worker_id)
    info = get_worker_info()
    if info is not None:  # a dataset with its own randomness (tile windows) seeds its pipeline
        dataset = info.dataset
        seeded = (
            dataset if hasattr(dataset, "set_random_seed") else getattr(dataset, "transform", None)
        )
        seed_augmentation(seeded, torch.initial_seed())
