"""`data.repeat_threshold`: training images that hold a rare class drawn more often."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import RandomSampler, WeightedRandomSampler

from seglab.config import validate
from seglab.data.repeat_factors import check_threshold, repeat_factors, repeat_sampler
from seglab.errors import ConfigError
from seglab.training import build
from tests.helpers import TINY, compose_train


def test_factors_by_hand():
    """10 images: class 0 in all, class 1 in one (10%), class 2 in four (40%). At t = 0.4,
    class 1 gets sqrt(0.4 / 0.1) = 2, class 2 exactly 1; an image takes its rarest class's."""
    presence = np.zeros((10, 3), bool)
    presence[:, 0] = True
    presence[0, 1] = True
    presence[[0, 1, 2, 3], 2] = True
    assert repeat_factors(presence, 0.4).tolist() == [2.0] + [1.0] * 9
    assert repeat_factors(presence, 0.9)[1] == pytest.approx(np.sqrt(0.9 / 0.4))
    assert repeat_factors(presence, 0.05).tolist() == [1.0] * 10  # no class that rare
    assert repeat_factors(np.zeros((2, 3), bool), 0.5).tolist() == [1.0, 1.0]  # nothing labelled


def test_no_rare_class_keeps_the_plain_shuffle(capsys: pytest.CaptureFixture):
    presence = [np.array([True, True])] * 4
    assert repeat_sampler(presence, 0.5, ["background", "cell"]) is None
    assert "every class is in at least 50% of the training images" in capsys.readouterr().out
    assert repeat_sampler(presence, None, ["background", "cell"]) is None


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "often", True])
def test_bad_thresholds_are_refused_with_the_key_named(value):
    with pytest.raises(ConfigError, match=r"data.repeat_threshold="):
        check_threshold(value)
    cfg = compose_train([*TINY, "data.path=/nonexistent", f"data.repeat_threshold={value}"])
    with pytest.raises(ConfigError, match=r"data.repeat_threshold"):
        validate(cfg)


def test_train_loader_draws_by_the_factors_of_each_images_classes(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """Through train.py's config: the factors come from the classes each training mask
    holds (read here through the training dataset, not the scan), one draw per image and
    epoch; the default draws every image equally."""
    export = shutil.copytree(tiny_export, tmp_path / "export")
    first = (export / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    mask = export / "SegmentationClass" / f"{first}.png"
    blank = np.zeros_like(np.asarray(Image.open(mask).convert("RGB")))  # all background
    Image.fromarray(blank).save(mask)
    plain = build(compose_train([*TINY, f"data.path={export}", f"run_dir={tmp_path / 'p'}"]))
    assert isinstance(plain.datamodule.train_dataloader().sampler, RandomSampler)
    cfg = compose_train([*TINY, f"data.path={export}", f"run_dir={tmp_path / 'r'}",
                         "data.repeat_threshold=1.0"])  # fmt: skip
    datamodule = build(cfg).datamodule
    train = datamodule.dataset("train")
    classes = len(datamodule.classes)
    presence = np.stack([np.isin(np.arange(classes), train.load(i)[1]) for i in range(len(train))])
    expected = repeat_factors(presence, 1.0)
    assert expected.tolist().count(1.0) == 1  # the blank image; the others hold rarer classes
    sampler = datamodule.train_dataloader().sampler
    assert isinstance(sampler, WeightedRandomSampler)
    assert sampler.weights.tolist() == pytest.approx(expected.tolist())
    assert sampler.num_samples == len(train) and sampler.replacement
    out = capsys.readouterr().out
    assert f"data.repeat_threshold=1.0: {int((expected > 1).sum())} of {len(train)}" in out
