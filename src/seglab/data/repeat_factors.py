"""Repeat-factor sampling: training images that hold a rare class are drawn more often.

`data.repeat_threshold: t` gives each class c the factor `r_c = max(1, sqrt(t / f_c))`, with
`f_c` the share of training images that contain c, and each image the largest factor of the
classes in it (Gupta et al., LVIS, 2019). An epoch then draws as many images as the split holds,
with replacement, each with probability proportional to its factor: a class found in 1% of the
images comes up sqrt(10) = 3.2 times as often at t = 0.1, and a class in at least t of the images
is drawn as often as before. Whole images are repeated, so every pixel of a drawn image is still
labelled as annotated, and the loss keeps its own class weights.

An export whose classes are all common (every class in at least t of the images: one object
class in every image, say) gets factors of 1 everywhere and the plain shuffle.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import WeightedRandomSampler

from seglab.console import say
from seglab.errors import ConfigError


def check_threshold(value: object) -> float | None:
    """`data.repeat_threshold`: null (off) or a share of images in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(
            f"data.repeat_threshold={value!r}: give the share of training images under which a "
            "class counts as rare, in (0, 1], e.g. 0.1, or null to draw every image equally"
        )
    return float(value)


def repeat_factors(presence: np.ndarray, threshold: float) -> np.ndarray:
    """One factor >= 1 per image from `presence`, a bool array (images, classes) that says
    which classes each image holds (see the module docstring)."""
    presence = np.asarray(presence, dtype=bool)
    if presence.size == 0:
        return np.ones(len(presence))
    share = presence.mean(axis=0)  # of the images, per class
    with np.errstate(divide="ignore"):
        per_class = np.where(share > 0, np.sqrt(threshold / np.maximum(share, 1e-12)), 1.0)
    per_class = np.maximum(per_class, 1.0)
    return np.where(presence, per_class, 1.0).max(axis=1, initial=1.0)


def repeat_sampler(
    presence: list[np.ndarray], threshold: float | None, class_names: list[str]
) -> WeightedRandomSampler | None:
    """The training sampler for `data.repeat_threshold`, or None (a plain shuffle) when it is
    off or no class is rare; says how many images it favours and for which classes."""
    if threshold is None or not presence:
        return None
    stacked = np.stack(presence)
    factors = repeat_factors(stacked, threshold)
    if not (factors > 1).any():
        say(f"data.repeat_threshold={threshold}: every class is in at least {threshold:.0%} of "
            "the training images; each image drawn equally")  # fmt: skip
        return None
    share = stacked.mean(axis=0)
    rare = [n for n, s in zip(class_names, share, strict=True) if 0 < s < threshold]
    shown = ", ".join(rare[:5]) + (f" and {len(rare) - 5} more" if len(rare) > 5 else "")
    say(
        f"data.repeat_threshold={threshold}: {int((factors > 1).sum())} of {len(factors)} "
        f"training images drawn up to {factors.max():.1f}x as often, for the classes in fewer "
        f"than {threshold:.0%} of them ({shown}); set data.repeat_threshold=null to draw "
        "each image equally"
    )
    return WeightedRandomSampler(factors.tolist(), num_samples=len(factors), replacement=True)
