"""Train-time augmentation follows `seed` and differs between loader workers.

albumentations 2 seeds its own generators when a pipeline is built, apart from
`seed_everything`: without seglab's worker seeding, two workers forked from one parent drew the
same crops and flips, and a run could not be repeated from its seed.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from seglab.data.datamodule import SegmentationDataModule
from tests.exports import striped, write_cvat


@pytest.fixture(scope="module")
def same_image_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight copies of one image: any two training samples differ only by their augmentation."""
    mask = striped(64, 96, n=3) * (np.arange(96)[None, :] % 7 == 0)
    train = {f"copy{i}": mask for i in range(8)}
    root = tmp_path_factory.mktemp("same") / "export"
    return write_cvat(root, {"train": train, "val": {"v": mask}})


def first_epoch(export: Path, seed: int, workers: int) -> list[torch.Tensor]:
    L.seed_everything(seed, workers=True)
    module = SegmentationDataModule(
        str(export), image_size=[64, 96], crop_size=[32, 32], batch_size=1,
        num_workers=workers, scale_range=[0.75, 1.5],
        augmentation=[{"_target_": "albumentations.HorizontalFlip", "p": 0.5}],
    )  # fmt: skip
    loader = module.train_dataloader()
    return [batch["mask"][0] for batch in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_seed_repeats_the_augmentation_and_another_changes_it(
    same_image_export: Path, workers: int
):
    first = first_epoch(same_image_export, 5, workers)
    again = first_epoch(same_image_export, 5, workers)
    other = first_epoch(same_image_export, 6, workers)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_two_workers_draw_different_augmentations(same_image_export: Path):
    # The loader takes batches from worker 0, 1, 0, 1, ...: pairs are the workers' k-th samples.
    masks = first_epoch(same_image_export, 5, workers=2)
    pairs = list(zip(masks[0::2], masks[1::2], strict=True))
    identical = sum(torch.equal(a, b) for a, b in pairs)
    assert identical == 0, f"{identical} of {len(pairs)} pairs of worker samples are identical"
