"""Metrics at each image's own resolution, images never squashed, and data.image_size=auto.

train.py's test metrics must be exactly what `predict.py labels=` reports for the same images,
on images whose size and aspect differ from data.image_size and from each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.data.sizes import CPU_CROP_PIXELS, auto_crop_size, auto_image_size, resolve_crop_pixels
from seglab.data.transforms import EvalCollate, build_eval_transform, build_train_transform
from seglab.errors import ConfigError
from seglab.prediction.info import ModelInfo
from seglab.prediction.run import run as predict_run
from seglab.preprocessing import fit_size, letterbox, max_fit_ratio, restore_logits
from seglab.training import build, run
from tests.exports import striped, write_cvat
from tests.helpers import TINY, compose_predict, compose_train

# (height, width) per item: none is 64x64, aspects from 0.5 to 2.2.
SHAPES = {
    "train": {"a": (48, 80), "b": (72, 40), "c": (64, 64), "d": (50, 70)},
    "val": {"e": (40, 90), "f": (70, 50), "g": (33, 47)},
    "test": {"h": (90, 60), "i": (45, 45), "j": (100, 44)},
}


@pytest.fixture(scope="module")
def odd_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("odd") / "export"
    subsets = {
        split: {item: striped(h, w) for item, (h, w) in items.items()}
        for split, items in SHAPES.items()
    }
    return write_cvat(root, subsets)


def test_fit_keeps_the_aspect_and_fills_one_side():
    assert fit_size((48, 80), (64, 64)) == (38, 64)
    assert fit_size((72, 40), (64, 64)) == (64, 36)
    assert fit_size((413, 275), (416, 288)) == (416, 277)
    image = np.full((48, 80, 3), 200, np.uint8)
    canvas = letterbox(image, (64, 64))
    assert canvas.shape == (64, 64, 3)
    assert (canvas[:38] == 200).all() and (canvas[38:] == 0).all()  # top-left, black below
    logits = torch.randn(3, 64, 64)
    restored = restore_logits(logits, (38, 64), (48, 80))
    assert restored.shape == (3, 48, 80)


def test_auto_image_size_rule():
    assert auto_image_size([(413, 275)] * 5 + [(400, 275)] * 4) == (416, 288)
    assert auto_image_size([(520, 696)] * 3) == (544, 704)  # rounded up: at its own pixels
    assert auto_image_size([(520, 696)] * 3, max_side=512) == (384, 512)
    assert auto_image_size([(20, 30)]) == (64, 64)  # at least 64
    assert auto_image_size([(1000, 3000)]) == (352, 1024)  # long side capped at 1024


def test_images_that_fit_keep_their_own_pixels_unless_upscale():
    """data.upscale=false (the default): an image smaller than the canvas is padded, not
    resampled, in training and evaluation alike; true enlarges it until it touches the canvas.
    A larger image is shrunk either way."""
    assert fit_size((520, 696), (544, 704), max_fit_ratio(upscale=False)) == (520, 696)
    assert fit_size((520, 696), (544, 704), max_fit_ratio(upscale=True)) == (526, 704)
    assert fit_size((600, 696), (544, 704), max_fit_ratio(upscale=False)) == (544, 631)
    assert fit_size((260, 348), (544, 704), max_fit_ratio(False, scale=2.0)) == (520, 696)
    rows, cols = np.mgrid[0:40, 0:56]
    mask = (rows // 8 * 7 + cols // 8).astype(np.uint8)  # one id per 8x8 block
    image = np.dstack([mask] * 3)
    channels_first = torch.from_numpy(image).permute(2, 0, 1)
    kept = build_train_transform([], (64, 64), (1.0, 1.0), 255)(image=image, mask=mask)
    assert (kept["mask"].numpy()[:40, :56] == mask).all()  # the same pixels, unscaled
    assert (kept["image"][:, :40, :56] == channels_first).all()
    assert (kept["mask"].numpy()[40:] == 255).all() and (kept["mask"].numpy()[:, 56:] == 255).all()
    enlarged = build_train_transform([], (64, 64), (1.0, 1.0), 255, upscale=True)
    assert (enlarged(image=image, mask=mask)["mask"].numpy() != 255).sum() == 46 * 64
    view = build_eval_transform((64, 64))(image=image, mask=mask)
    assert view["fitted"].tolist() == [40, 56]
    assert (view["image"][:, :40, :56] == channels_first).all()
    enlarged_view = build_eval_transform((64, 64), upscale=True)(image=image, mask=mask)
    assert enlarged_view["fitted"].tolist() == [46, 64]


def test_train_geometry_never_squashes():
    """A 40x80 stripe pattern keeps its aspect: the crop's rows still hold whole stripes."""
    transform = build_train_transform([], (64, 64), (1.0, 1.0), ignore_index=255)
    mask = np.zeros((40, 80), np.uint8)
    mask[:, :40] = 1  # left half 1, right half 0
    out = transform(image=np.zeros((40, 80, 3), np.uint8), mask=mask)
    crop = out["mask"].numpy()
    assert crop.shape == (64, 64)
    # Fitted to 32x64 (aspect 1:2), then padded with ignored rows: no row is all 1 or 0 alike.
    assert (crop[32:] == 255).all()
    assert (crop[:32, :32] == 1).all() and (crop[:32, 32:] == 0).all()


def test_train_crops_are_taken_at_the_evaluation_scale():
    """data.crop_size: a 64x96 image fitted into 64x96 (its own scale) gives 32x32 crops whose
    pixels are the image's own, unscaled: a crop of a pattern that codes its coordinates."""
    rows, cols = np.mgrid[0:64, 0:96]
    mask = (rows // 8 * 12 + cols // 8).astype(np.uint8)  # one id per 8x8 block
    transform = build_train_transform([], (64, 96), (1.0, 1.0), 255, crop_size=(32, 32))
    for _ in range(20):  # many random windows, the image's edges included
        crop = transform(image=np.zeros((64, 96, 3), np.uint8), mask=mask)["mask"].numpy()
        assert crop.shape == (32, 32)
        top, left = np.argwhere(mask == crop[0, 0])[0]  # the block the crop starts in
        tops = range(top, min(top + 8, 64 - 32 + 1))  # windows that fit inside the image
        lefts = range(left, min(left + 8, 96 - 32 + 1))
        found = [
            (t, c) for t in tops for c in lefts if (mask[t : t + 32, c : c + 32] == crop).all()
        ]
        assert found, "the crop is not an unscaled window of the image"


def test_crop_size_auto_caps_each_side(tmp_path: Path):
    from seglab.data.datamodule import SegmentationDataModule
    from seglab.data.sizes import AUTO_CROP_SIDE

    module = SegmentationDataModule(str(tmp_path), image_size=[512, 704], crop_size="auto")
    assert module.crop_size == (AUTO_CROP_SIDE, AUTO_CROP_SIDE) == (512, 512)
    assert SegmentationDataModule(str(tmp_path), image_size=[64, 96]).crop_size == (64, 96)
    whole = SegmentationDataModule(str(tmp_path), image_size=[512, 704], crop_size=None)
    assert whole.crop_size == (512, 704)


def test_crop_pixels_caps_the_auto_crop_of_timed_runs_without_cuda(
    odd_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The rule: aspect kept, sides rounded to multiples of 32, about the area asked for.
    assert CPU_CROP_PIXELS == 320 * 224
    assert auto_crop_size((416, 288), CPU_CROP_PIXELS) == (320, 224)
    assert auto_crop_size((512, 704), CPU_CROP_PIXELS) == (256, 256)  # sides capped first
    assert auto_crop_size((192, 256), CPU_CROP_PIXELS) == (192, 256)  # already under the cap
    assert auto_crop_size((416, 288)) == (416, 288)
    # auto: only a time-budgeted run without CUDA; a number or null as given.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_crop_pixels("auto", timed=True) == CPU_CROP_PIXELS
    assert resolve_crop_pixels("auto", timed=False) is None
    assert resolve_crop_pixels(50000, timed=True) == 50000
    assert resolve_crop_pixels(None, timed=True) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_crop_pixels("auto", timed=True) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Through train.py's config: a budget caps the crop, epochs leave it as it was.
    base = [*TINY, f"data.path={odd_export}", "data.image_size=[416,288]"]
    budgeted = build(compose_train([*base, "budget=1m", f"run_dir={tmp_path / 'a'}"]))
    assert budgeted.datamodule.crop_size == (320, 224)
    by_epochs = build(compose_train([*base, f"run_dir={tmp_path / 'b'}"]))
    assert by_epochs.datamodule.crop_size == (416, 288)
    given = build(compose_train([*base, "budget=1m", "data.crop_size=[96,64]",
                                 f"run_dir={tmp_path / 'c'}"]))  # fmt: skip
    assert given.datamodule.crop_size == (96, 64)  # an explicit crop wins
    with pytest.raises(ConfigError, match=r"data.crop_pixels: expected an integer, found .many."):
        build(compose_train([*base, "data.crop_pixels=many", f"run_dir={tmp_path / 'd'}"]))


def test_eval_view_keeps_the_mask_at_its_own_size():
    transform = build_eval_transform((64, 64))
    samples = [
        transform(image=np.zeros((h, w, 3), np.uint8), mask=striped(h, w))
        for h, w in [(33, 47), (70, 50)]
    ]
    batch = EvalCollate(255)(samples)
    assert batch["image"].shape == (2, 3, 64, 64)
    assert batch["mask"].shape == (2, 70, 50)
    assert batch["size"].tolist() == [[33, 47], [70, 50]]
    assert batch["fitted"].tolist() == [[33, 47], [64, 46]]  # the small one kept, not enlarged
    assert (batch["mask"][0, 33:] == 255).all() and (batch["mask"][0, :, 47:] == 255).all()


def test_train_py_test_metrics_equal_predict_py_labels(odd_export: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    metrics = run(
        compose_train(
            [*TINY, f"data.path={odd_export}", f"run_dir={run_dir}", "trainer.max_epochs=1",
             "logger=none"]
        )
    )  # fmt: skip
    test_list = tmp_path / "test.txt"
    test_list.write_text("".join(f"{odd_export}/JPEGImages/{i}.jpg\n" for i in SHAPES["test"]))
    out = tmp_path / "predicted"
    summary = predict_run(
        compose_predict(
            [f"ckpt={metrics['best_ckpt']}", f"input={test_list}", f"output={out}",
             f"labels={odd_export}", "device=cpu", "num_workers=0", "progress=false",
             "outputs=[index]"]
        )
    )  # fmt: skip
    assert summary["images"] == 3
    # The same pixels counted: every pixel of every test image at its own size.
    confusion = np.loadtxt(out / "confusion.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    assert confusion.sum() == sum(h * w for h, w in SHAPES["test"].values())
    assert (out / "confusion.csv").read_text() == (run_dir / "confusion_test.csv").read_text()
    scored = json.loads((out / "metrics.json").read_text())
    assert scored["mIoU"] == pytest.approx(metrics["test/mIoU"], abs=1e-6)


def test_image_size_auto_is_derived_printed_and_stored(odd_export: Path, tmp_path: Path, capsys):
    overrides = [o for o in TINY if not o.startswith("data.image_size")]
    metrics = run(
        compose_train(
            [*overrides, f"data.path={odd_export}", f"run_dir={tmp_path}", "trainer.max_epochs=1",
             "logger=none", "test=false"]
        )
    )  # fmt: skip
    expected = auto_image_size(list(SHAPES["train"].values()))
    assert f"data.image_size=auto -> {list(expected)}" in capsys.readouterr().out
    hparams = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)[
        "hyper_parameters"
    ]
    assert list(hparams["image_size"]) == list(expected)
    # data.upscale is stored for prediction; checkpoints from before it enlarged (the default).
    assert hparams["upscale"] is False and ModelInfo.from_hparams(hparams).upscale is False
    del hparams["upscale"]
    assert ModelInfo.from_hparams(hparams).upscale is True
