"""Subset names -> train/val/test, and a reproducible split when an export has none."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from seglab.data.errors import DatasetError

SPLITS = ("train", "val", "test")
UNSPLIT = "unsplit"
# Names CVAT, Datumaro and users give their subsets, compared case-insensitively.
SUBSET_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "default": UNSPLIT,  # a CVAT task export: one subset, no split made yet
}


def split_of(subset: str, subset_map: Mapping[str, str], source: str) -> str:
    """The split a subset belongs to; `subset_map` (exact names) wins over the aliases."""
    if subset in subset_map:
        target = subset_map[subset]
        if target not in (*SPLITS, UNSPLIT):
            raise DatasetError(
                f"data.subset_map maps {subset!r} to {target!r}; "
                f"map subsets to one of {[*SPLITS, UNSPLIT]}"
            )
        return target
    split = SUBSET_ALIASES.get(subset.lower())
    if split is None:
        raise DatasetError(
            f"{source}: unknown subset {subset!r}. Known names (any case): "
            f"{sorted(SUBSET_ALIASES)}. Map it yourself, e.g. "
            f"'data.subset_map={{{subset}: train}}' (train, val, test or unsplit)"
        )
    return split


def assign_unsplit(
    ids: Sequence[str], has_val: bool, val_fraction: float, seed: int
) -> dict[str, str]:
    """Item id -> split for unsplit items: all train if a val split exists, else a seeded cut."""
    if has_val or not ids:
        return dict.fromkeys(ids, "train")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(
            f"the export has no validation subset and data.val_fraction={val_fraction}; "
            "set data.val_fraction between 0 and 1 (e.g. 0.2) to hold out part of it"
        )
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(val_fraction * len(order))))
    val = set(order[:n_val])
    return {item: "val" if item in val else "train" for item in ids}
