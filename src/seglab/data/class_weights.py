"""Class weights from training-set pixel frequencies, for `loss.class_weights=auto|inverse`.

With `f_c` the share of counted (non-ignored) training pixels of class c:

- `median` (`auto`): median frequency balancing (Eigen & Fergus 2015), `w_c = median(f) / f_c`;
  a class of median frequency weighs 1, rarer classes more.
- `inverse`: `w_c = 1 / (K f_c)` over the K classes present, so that the average weight of a
  training pixel is exactly 1 and the loss keeps its scale.

A class with no training pixel gets weight 0: no target pixel can ask for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

METHODS = ("auto", "median", "inverse", "enet")


def pixel_counts(
    load_mask: Callable[[int], np.ndarray], size: int, num_classes: int, ignore_index: int
) -> np.ndarray:
    """Pixels per class over `load_mask(0..size-1)`, ignored pixels left out."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(size):
        mask = np.asarray(load_mask(i)).ravel()
        counts += np.bincount(mask[mask != ignore_index], minlength=num_classes)[:num_classes]
    return counts


def weights_from_counts(counts: Sequence[int] | np.ndarray, method: str = "median") -> list[float]:
    """Per-class weights from pixel counts by `method` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(
            f"loss.class_weights={method!r}: give null, a list of numbers, or one of {METHODS}"
        )
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("loss.class_weights: the training split has no labelled pixel")
    freq = counts / counts.sum()
    weights = np.zeros_like(freq)
    if method == "inverse":
        weights[present] = 1.0 / (present.sum() * freq[present])
    elif method == "enet":
        raw = 1.0 / np.log(1.02 + freq[present])
        weights[present] = raw / float((freq[present] * raw).sum())
    else:
        weights[present] = np.median(freq[present]) / freq[present]
    return [round(float(w), 6) for w in weights]
