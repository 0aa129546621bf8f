"""Every loss config: finite loss and gradients, zero gradient on ignored pixels; class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from seglab.data.class_weights import pixel_counts, weights_from_counts
from seglab.models.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
)
from seglab.models.registry import build_loss
from tests.helpers import ROOT, compose_train

LOSSES = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("[!_]*.yaml"))
IGNORE = 255


def build(name: str, *overrides: str) -> torch.nn.Module:
    cfg = compose_train([f"loss={name}", *overrides])
    if isinstance(cfg.loss.get("class_weights"), str):  # a method: training counts the pixels
        cfg.loss.class_weights = None
    return build_loss(OmegaConf.to_container(cfg.loss, resolve=True))


def batch(num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_classes, 8, 8, generator=generator, requires_grad=True)
    target = torch.randint(0, num_classes, (2, 8, 8), generator=generator)
    target[:, :3] = IGNORE  # three rows of every image are ignored
    return logits, target


def test_every_loss_of_the_issue_has_a_config():
    expected = {"ce", "dice", "dice_ce", "focal", "lovasz", "tversky", "jaccard", "focal_dice"}
    assert set(LOSSES) >= expected


@pytest.mark.parametrize("class_weights", [None, "[0.5,1.0,2.0]"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_finite_and_ignored_pixels_get_no_gradient(name: str, class_weights: str | None):
    overrides = [f"loss.class_weights={class_weights}"] if class_weights else []
    loss_fn = build(name, *overrides)
    logits, target = batch()
    loss = loss_fn(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert grad[:, :, 3:].abs().sum() > 0  # counted pixels learn
    assert torch.equal(grad[:, :, :3], torch.zeros_like(grad[:, :, :3]))  # ignored ones do not


@pytest.mark.parametrize("name", LOSSES)
def test_a_fully_ignored_batch_gives_zero_not_nan(name: str):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = build(name)(logits, torch.full((1, 4, 4), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSSES)
def test_a_perfect_prediction_scores_better_than_a_wrong_one(name: str):
    target = torch.randint(0, 3, (1, 6, 6), generator=torch.Generator().manual_seed(1))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    wrong = perfect.roll(1, dims=1)
    loss_fn = build(name)
    assert loss_fn(perfect, target) < 0.05 < loss_fn(wrong, target)


def test_combinations_pass_class_weights_to_every_term():
    loss_fn = build("focal_dice", "loss.class_weights=[1,2,3]", "loss.weights.focal=0.5")
    for term in loss_fn.losses.values():
        assert term.class_weights.tolist() == [1, 2, 3]
    assert loss_fn.weights == {"focal": 0.5, "dice": 1.0}
    logits, target = batch()
    expected = 0.5 * loss_fn.losses["focal"](logits, target) + loss_fn.losses["dice"](
        logits, target
    )
    assert loss_fn(logits, target).item() == pytest.approx(expected.item())


def test_region_losses_match_their_formulas():
    # One image, two classes, hard probabilities: TP/FP/FN counted by hand.
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.tensor([[[[9.0, -9, -9, 9]], [[-9.0, 9, 9, -9]]]])  # predicts 0, 1, 1, 0
    # class 0: tp 1, fp 1, fn 1; class 1: tp 1, fp 1, fn 1 (smooth 0 for exact numbers)
    dice = DiceLoss(smooth=0.0)(logits, target)
    jaccard = JaccardLoss(smooth=0.0)(logits, target)
    tversky = TverskyLoss(alpha=0.2, beta=0.8, smooth=0.0)(logits, target)
    assert dice.item() == pytest.approx(1 - 2 / 4, abs=1e-3)
    assert jaccard.item() == pytest.approx(1 - 1 / 3, abs=1e-3)
    assert tversky.item() == pytest.approx(1 - 1 / (1 + 0.2 + 0.8), abs=1e-3)


@pytest.mark.parametrize("weights", [None, [0.2, 1.0, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_is_torchs_mean(weights: list[float] | None, smoothing: float):
    logits, target = batch()
    ours = CrossEntropyLoss(class_weights=weights, label_smoothing=smoothing)(logits, target)
    theirs = torch.nn.functional.cross_entropy(
        logits,
        target,
        weight=None if weights is None else torch.tensor(weights),
        ignore_index=IGNORE,
        label_smoothing=smoothing,
    )
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_and_lovasz_of_hard_labels_is_one_minus_iou():
    logits, target = batch()
    ce = CrossEntropyLoss()(logits, target)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-5)
    # For hard 0/1 probabilities Lovasz-softmax equals 1 - IoU per present class.
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.tensor([[[[50.0, -50, -50, 50]], [[-50.0, 50, 50, -50]]]])
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(1 - 1 / 3, abs=1e-4)


def test_wrong_number_of_class_weights_is_named():
    logits, target = batch()
    with pytest.raises(ValueError, match="class_weights has 2 values but the model predicts 3"):
        CrossEntropyLoss(class_weights=[1.0, 2.0])(logits, target)


def test_class_weights_from_pixel_frequencies():
    masks = [np.array([[0, 0, 0, 0], [0, 0, 1, 255]]), np.array([[0, 1, 1, 255]])]
    counts = pixel_counts(lambda i: masks[i], len(masks), num_classes=3, ignore_index=255)
    assert counts.tolist() == [7, 3, 0]  # class 2 never appears; 255 is not counted
    # f = [0.7, 0.3]; median of present = 0.5
    assert weights_from_counts(counts, "median") == pytest.approx([0.5 / 0.7, 0.5 / 0.3, 0.0])
    assert weights_from_counts(counts, "auto") == weights_from_counts(counts, "median")
    inverse = weights_from_counts(counts, "inverse")
    assert inverse == pytest.approx([1 / (2 * 0.7), 1 / (2 * 0.3), 0.0])
    assert sum(c * w for c, w in zip(counts, inverse, strict=True)) / counts.sum() == pytest.approx(
        1
    )
    enet = weights_from_counts(counts, "enet")  # 1 / ln(1.02 + f), mean pixel weight 1
    raw = [1 / np.log(1.02 + 0.7), 1 / np.log(1.02 + 0.3)]
    scale = 0.7 * raw[0] + 0.3 * raw[1]
    assert enet == pytest.approx([raw[0] / scale, raw[1] / scale, 0.0], rel=1e-5)
    with pytest.raises(ValueError, match="one of"):
        weights_from_counts(counts, "balanced")


def test_enet_weights_stay_bounded_however_rare_a_class():
    counts = np.array([10**9, 10**6, 10**3, 1])  # a 59-class export's range, and beyond
    median = weights_from_counts(counts, "median")
    enet = weights_from_counts(counts, "enet")
    assert max(median) / min(median) > 1e8
    assert max(enet) / min(enet) < 51  # 1/ln(1.02) over 1/ln(2.02)
    softer = weights_from_counts(counts, "enet_sqrt")  # the square roots, rescaled
    assert max(softer) / min(softer) == pytest.approx((max(enet) / min(enet)) ** 0.5, rel=1e-4)
    assert float(np.dot(counts, softer) / counts.sum()) == pytest.approx(1, rel=1e-4)
    assert np.argsort(softer).tolist() == np.argsort(enet).tolist()  # same order, gentler


def test_enet_if_rare_weighs_only_exports_with_a_rare_class():
    """The default of `loss=ce`: ENet weights when a class present has under 1% of the
    pixels (where weights make a short run learn it at all), none where every class is
    common (where they only pull outlines towards the smaller class)."""
    common = np.array([800, 200, 0])  # nuclei-like: a fifth of the pixels; class 2 absent
    assert weights_from_counts(common, "enet_if_rare") is None
    rare = np.array([9_000, 991, 9])  # 0.09% of the pixels
    assert weights_from_counts(rare, "enet_if_rare") == weights_from_counts(rare, "enet")
    edge = np.array([99, 1])  # exactly 1%: common
    assert weights_from_counts(edge, "enet_if_rare") is None
    assert weights_from_counts(common, "enet_sqrt_if_rare") is None
    assert weights_from_counts(rare, "enet_sqrt_if_rare") == weights_from_counts(rare, "enet_sqrt")
