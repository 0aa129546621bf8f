"""Class weights from training-set pixel frequencies, for `loss.class_weights=auto|inverse`.

With `f_c` the share of counted (non-ignored) training pixels of class c:

- `median` (`auto`): median frequency balancing (Eigen & Fergus 2015), `w_c = median(f) / f_c`;
  a class of median frequency weighs 1, rarer classes more.
- `inverse`: `w_c = 1 / (K f_c)` over the K classes present, so that the average weight of a
  training pixel is exactly 1 and the loss keeps its scale.
- `enet`: `w_c ∝ 1 / ln(1.02 + f_c)` (ENet, Paszke et al. 2016), scaled to a mean pixel weight of
  1: bounded (at most ~50x between classes) where median balancing spans 10^5x on a 59-class
  export and collapsed training onto its rarest classes.
- `enet_sqrt`: the square roots of the `enet` weights, scaled to a mean pixel weight of 1: the
  same order, at most ~7x between classes. The commonest class (background, say) then weighs
  about 0.6 of an average pixel instead of 0.2, and is not given up for the rare ones:
  ccp at 6 minutes scored test mIoU 0.0503 against 0.0378 with `enet` (background IoU 0.89
  against 0.75; benchmarks/README.md).
- `enet_sqrt_if_rare` (the default of `loss=ce`), `enet_if_rare`: `enet_sqrt` or `enet` when
  some class present has less than RARE_PIXEL_SHARE of the pixels, else no weights (None).
  Weights are how a few-epoch run learns rare classes at all (ccp: 59 labels, most under 1% of
  the pixels); where every class is common they only bias each outline pixel towards the
  smaller class: bbbc039's nuclei (about a fifth of the pixels) scored test mIoU 0.9654
  unweighted against 0.9569 with `enet` (benchmarks/README.md).

A class with no training pixel gets weight 0: no target pixel can ask for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

METHODS = ("auto", "median", "inverse", "enet", "enet_sqrt", "enet_if_rare", "enet_sqrt_if_rare")
RARE_PIXEL_SHARE = 0.01  # `*_if_rare`: a class under this share of the pixels is rare


def pixel_counts(
    load_mask: Callable[[int], np.ndarray], size: int, num_classes: int, ignore_index: int
) -> np.ndarray:
    """Pixels per class over `load_mask(0..size-1)`, ignored pixels left out."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(size):
        mask = np.asarray(load_mask(i)).ravel()
        counts += np.bincount(mask[mask != ignore_index], minlength=num_classes)[:num_classes]
    return counts


def weights_from_counts(
    counts: Sequence[int] | np.ndarray, method: str = "median"
) -> list[float] | None:
    """Per-class weights from pixel counts by `method` (see the module docstring); None for
    `*_if_rare` without a rare class."""
    if method not in METHODS:
        raise ValueError(
            f"loss.class_weights={method!r}: give null, a list of numbers, or one of {METHODS}"
        )
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("loss.class_weights: the training split has no labelled pixel")
    freq = counts / counts.sum()
    if method.endswith("_if_rare"):
        if freq[present].min() >= RARE_PIXEL_SHARE:
            return None
        method = method.removesuffix("_if_rare")
    weights = np.zeros_like(freq)
    if method == "inverse":
        weights[present] = 1.0 / (present.sum() * freq[present])
    elif method in ("enet", "enet_sqrt"):
        raw = 1.0 / np.log(1.02 + freq[present])
        if method == "enet_sqrt":
            raw = np.sqrt(raw)
        weights[present] = raw / float((freq[present] * raw).sum())
    else:
        weights[present] = np.median(freq[present]) / freq[present]
    return [round(float(w), 6) for w in weights]
