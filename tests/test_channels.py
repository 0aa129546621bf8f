"""Any number of channels: 1-channel and multi-band TIFF exports train with `model.in_channels`
and `data.mean/std` from the data, stored in the checkpoint, and predict.py, the ONNX export,
the scoring and the server take the same inputs; a wrong channel count is a named error."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from segmentation_models_pytorch.encoders._utils import patch_first_conv

from seglab.data.channels import ChannelMismatch, display_rgb, file_channels, resolve_channels
from seglab.data.cvat_writer import write_labelmap
from seglab.data.dataset import decode_image, read_image
from seglab.data.statistics import measure
from seglab.errors import ConfigError
from seglab.models.factory import create_model
from seglab.prediction import load_predictor
from seglab.prediction.info import ModelInfo
from seglab.prediction.run import run as predict_run
from seglab.serving.app import ApiError, Limits, _prepare
from seglab.training import build, run
from tests.exports import save_rgb, to_rgb
from tests.helpers import TINY, compose_predict, compose_train
from tests.test_depth import CLASSES, SPLITS, nuclei

BANDS = 5


def five_bands(image: np.ndarray) -> np.ndarray:
    """A 5-band 16-bit stack from a 12-bit field: the signal in bands 0 and 3, of different
    ranges (per-band stretch matters), and three noise bands."""
    rng = np.random.default_rng(int(image[0, 0]))
    noise = [rng.integers(0, 60000, image.shape).astype(np.uint16) for _ in range(3)]
    return np.stack([image, noise[0], noise[1], image // 16, noise[2]], axis=2)


def write_export(root: Path, write) -> Path:
    """A CVAT export of `nuclei` fields; `write(path_without_suffix, image)` writes each image."""
    rng = np.random.default_rng(3)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    write_labelmap(root / "labelmap.txt", CLASSES)
    for subset, count in SPLITS.items():
        ids = [f"{subset.lower()}{i}" for i in range(count)]
        for i, item in enumerate(ids):
            image, mask = nuclei(rng)
            write(root / "JPEGImages" / item, image, i)
            save_rgb(root / "SegmentationClass" / f"{item}.png", to_rgb(mask, CLASSES))
        (root / "ImageSets" / "Segmentation" / f"{subset}.txt").write_text("\n".join(ids) + "\n")
    return root


def write_gray16(stem: Path, image: np.ndarray, i: int) -> None:
    assert cv2.imwrite(str(stem.with_suffix(".png")), image)


def write_multiband(stem: Path, image: np.ndarray, i: int) -> None:
    """Three TIFF forms of a 5-band image, in turn: contiguous samples (YXS), planar samples
    (SYX), and one page per band (as ImageJ/OME stacks): all read alike."""
    stack = five_bands(image)
    path = stem.with_suffix(".tif")
    if i % 3 == 0:
        tifffile.imwrite(path, stack, photometric="minisblack", planarconfig="contig")
    elif i % 3 == 1:
        tifffile.imwrite(path, stack.transpose(2, 0, 1), photometric="minisblack",
                         planarconfig="separate")  # fmt: skip
    else:
        tifffile.imwrite(path, stack.transpose(2, 0, 1), photometric="minisblack")


def train(export: Path, run_dir: Path, *extra: str) -> dict:
    cfg = compose_train(
        [*TINY, f"data.path={export}", f"run_dir={run_dir}", "model=unet", "seed=0",
         "data.crop_size=null", "trainer.max_epochs=1", "logger=none", *extra]
    )  # fmt: skip
    return run(cfg)


def predict(ckpt: str, source: Path, out: Path, *extra: str) -> dict:
    return predict_run(
        compose_predict(
            [f"ckpt={ckpt}", f"input={source}", f"output={out}", "device=cpu", "num_workers=0",
             "progress=false", *extra]
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def multiband(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 5-band TIFF export trained one epoch with the defaults (in_channels, mean and std
    auto)."""
    export = write_export(tmp_path_factory.mktemp("bands") / "export", write_multiband)
    metrics = train(export, tmp_path_factory.mktemp("bands-run"))
    return {"export": export, "ckpt": metrics["best_ckpt"]}


def test_multiband_tiffs_read_whole_in_every_form(multiband: dict):
    images = sorted((multiband["export"] / "JPEGImages").glob("*.tif"))
    for path in images:
        assert file_channels(path, path) == BANDS
        image = read_image(path, channels=BANDS)
        assert image.shape == (64, 64, BANDS) and image.dtype == np.uint8
        # Each band stretched between its own percentiles: the dim copy (band 3) as the bright.
        difference = np.abs(image[..., 3].astype(int) - image[..., 0])
        assert difference.max() <= 4 and difference.mean() < 1, path
    with pytest.raises(ChannelMismatch, match=rf"{images[0].name}: image of 5 channel\(s\).*3"):
        read_image(images[0])  # a 3-channel model's read


def test_5_channel_export_trains_and_predicts_with_its_statistics(
    multiband: dict, tmp_path: Path, capsys: pytest.CaptureFixture
):
    hparams = torch.load(multiband["ckpt"], weights_only=True)["hyper_parameters"]
    assert hparams["model"]["in_channels"] == BANDS
    train_images = sorted((multiband["export"] / "JPEGImages").glob("train*.tif"))
    expected = measure(train_images, lambda p: read_image(p, channels=BANDS), BANDS)
    assert hparams["mean"] == pytest.approx(list(expected[0]))
    assert hparams["std"] == pytest.approx(list(expected[1]))
    assert hparams["std"][1] == pytest.approx(12**-0.5, abs=0.01)  # a uniform noise band

    out = tmp_path / "out"
    summary = predict(multiband["ckpt"], multiband["export"] / "JPEGImages", out,
                      f"labels={multiband['export']}", "overlay_bands=[3,1,2]")  # fmt: skip
    assert summary["images"] == sum(SPLITS.values()) and not summary["unreadable"]
    assert summary["metrics"]["scored_images"] == sum(SPLITS.values())
    overlay = cv2.imread(str(out / "test0_overlay.jpg"))
    assert overlay.shape == (64, 64, 3)
    predictor = load_predictor(multiband["ckpt"], "cpu")
    assert predictor.info.mean == pytest.approx(expected[0])


def test_a_channel_count_the_checkpoint_does_not_take_stops_predict_by_name(
    multiband: dict, tmp_path: Path
):
    rgb = tmp_path / "in" / "photo.png"
    rgb.parent.mkdir()
    cv2.imwrite(str(rgb), np.zeros((40, 50, 3), np.uint8))
    expected = r"photo.png: image of 3 channel\(s\), but the model takes 5"
    with pytest.raises(ChannelMismatch, match=expected):
        predict(multiband["ckpt"], rgb.parent, tmp_path / "out")
    # The server answers 400 with the same words.
    predictor = load_predictor(multiband["ckpt"], "cpu")
    with pytest.raises(ApiError, match="3 channel"):
        _prepare(rgb.read_bytes(), rgb.name, predictor, Limits())
    with pytest.raises(ConfigError, match=r"overlay_bands=\[0, 1, 7\]"):
        predict(multiband["ckpt"], rgb.parent, tmp_path / "out", "overlay_bands=[0,1,7]")


def test_5_channel_onnx_model_predicts_the_torch_labels(multiband: dict, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from seglab.prediction.onnx import load_onnx_predictor, write_onnx

    report = write_onnx(multiband["ckpt"], tmp_path / "model.onnx")
    assert report.checks
    onnx = load_onnx_predictor(tmp_path / "model.onnx", "cpu")
    torch_predictor = load_predictor(multiband["ckpt"], "cpu")
    assert onnx.info.in_channels == BANDS and onnx.info.mean == torch_predictor.info.mean
    paths = sorted((multiband["export"] / "JPEGImages").glob("test*.tif"))
    images = [read_image(p, onnx.info.reader, BANDS) for p in paths]
    for a, b in zip(onnx.labels(images), torch_predictor.labels(images), strict=True):
        assert (a == b).mean() > 0.999


def test_16bit_grayscale_trains_on_one_channel_with_auto_statistics(tmp_path: Path):
    export = write_export(tmp_path / "export", write_gray16)
    metrics = train(export, tmp_path / "run", "model.in_channels=1", "data.mean=auto",
                    "data.std=auto")  # fmt: skip
    hparams = torch.load(metrics["best_ckpt"], weights_only=True)["hyper_parameters"]
    assert hparams["model"]["in_channels"] == 1 and len(hparams["mean"]) == 1
    image = read_image(next((export / "JPEGImages").glob("test*.png")), channels=1)
    assert image.shape == (64, 64, 1)
    summary = predict(metrics["best_ckpt"], export / "JPEGImages", tmp_path / "out")
    assert summary["images"] == sum(SPLITS.values()) and not summary["unreadable"]
    assert cv2.imread(str(tmp_path / "out" / "test0_overlay.jpg")).shape == (64, 64, 3)


def test_in_channels_from_the_data_and_mismatches_named():
    gray_and_rgb = {"train": [("a.png", 1), ("b.jpg", 3)], "val": [("c.png", 1)]}
    assert resolve_channels("auto", gray_and_rgb) == 3  # as seglab always read them
    assert resolve_channels("auto", {"train": [("a.tif", 5), ("b.tif", 5)]}) == 5
    mixed = {"train": [("a.tif", 5), ("b.tif", 5), ("odd.tif", 4)]}
    with pytest.raises(ChannelMismatch, match=r"odd.tif: image of 4 .*most images have 5"):
        resolve_channels("auto", mixed)
    with pytest.raises(ChannelMismatch, match=r"b.jpg: .* model.in_channels=1 takes 1"):
        resolve_channels(1, gray_and_rgb)


def test_mean_std_of_the_wrong_length_or_form_are_config_errors(tmp_path: Path):
    export = write_export(tmp_path / "export", write_gray16)
    with pytest.raises(ConfigError, match=r"data.mean=\[0.5, 0.5\]: 2 value\(s\) for 1-channel"):
        train(export, tmp_path / "run", "model.in_channels=1", "data.mean=[0.5,0.5]",
              "data.std=[0.2]")  # fmt: skip
    with pytest.raises(ConfigError, match="data.std"):
        train(export, tmp_path / "run", "data.std=sometimes")


def test_local_rgb_weights_are_adapted_to_n_channels_as_smp_adapts(tmp_path: Path):
    reference = create_model("unet", 2, encoder_name="resnet18", encoder_weights=None)
    torch.save(reference.encoder.state_dict(), tmp_path / "rgb.pth")
    for channels in (1, 2, 5):
        model = create_model("unet", 2, encoder_name="resnet18", in_channels=channels,
                             encoder_weights=str(tmp_path / "rgb.pth"))  # fmt: skip
        expected = create_model("unet", 2, encoder_name="resnet18", encoder_weights=None)
        expected.encoder.load_state_dict(reference.encoder.state_dict())
        patch_first_conv(expected.encoder, channels, pretrained=True)
        torch.testing.assert_close(model.encoder.conv1.weight, expected.encoder.conv1.weight)


def test_display_bands_and_upload_decoding():
    bands = np.arange(2 * 2 * 5, dtype=np.uint8).reshape(2, 2, 5)
    np.testing.assert_array_equal(display_rgb(bands), bands[..., :3])
    np.testing.assert_array_equal(display_rgb(bands, [4, 0, 2]), bands[..., [4, 0, 2]])
    gray = bands[..., :1]
    assert display_rgb(gray).shape == (2, 2, 3)
    _, png = cv2.imencode(".png", np.full((8, 8), 7, np.uint8))
    assert decode_image(png.tobytes(), "g.png", channels=1).shape == (8, 8, 1)
    assert decode_image(png.tobytes(), "g.png").shape == (8, 8, 3)
    with pytest.raises(ChannelMismatch, match="g.png: image of 1 channel"):
        decode_image(png.tobytes(), "g.png", channels=5)


def test_checkpoints_and_onnx_files_from_before_read_as_3_channels():
    classes = [{"name": "a", "color": [0, 0, 0]}]
    hparams = {"model": {"arch": "unet"}, "classes": classes, "image_size": [64, 64],
               "mean": [0.5] * 3, "std": [0.2] * 3}  # fmt: skip
    info = ModelInfo.from_hparams(hparams)
    assert info.in_channels == 3
    data = json.loads(info.to_json())
    del data["in_channels"]  # an ONNX model exported before the key existed
    assert ModelInfo.from_json(json.dumps(data)).in_channels == 3


def test_init_from_a_model_of_another_channel_count_names_the_counts(
    multiband: dict, tmp_path: Path
):
    export = write_export(tmp_path / "export", write_gray16)  # read as 3 channels
    with pytest.raises(ConfigError, match=r"takes 5-channel images and this run's 3"):
        build(compose_train([*TINY, f"data.path={export}", f"run_dir={tmp_path / 'run'}",
                             "model=unet", f"model.init_from={multiband['ckpt']}"]))  # fmt: skip
