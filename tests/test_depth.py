"""16-bit images: read at full depth by one rule (`data.intensity`) in training, prediction and
the server, stored in the checkpoint; depths the reader cannot map are refused by name."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from seglab.config import validate
from seglab.data.cvat_writer import write_labelmap
from seglab.data.datamodule import SegmentationDataModule
from seglab.data.dataset import read_image
from seglab.data.errors import DatasetError
from seglab.data.intensity import Intensity, percentiles
from seglab.data.labelmap import SegClass
from seglab.errors import ConfigError
from seglab.models.hparams import check_hparams
from seglab.prediction import load_predictor
from seglab.prediction.info import ModelInfo
from seglab.prediction.predictor import Predictor
from seglab.prediction.run import run as predict_run
from seglab.serving.app import Limits, _prepare
from seglab.training import run
from tests.exports import save_rgb, to_rgb
from tests.helpers import ROOT, TINY, compose_predict, compose_train

CLASSES = (SegClass("background", (0, 0, 0)), SegClass("nucleus", (51, 221, 255)))
SPLITS = {"Train": 8, "Validation": 2, "Test": 2}


def nuclei(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A 12-bit fluorescence-like field: dim noisy background (~150), bright discs (1000-3500)
    and one hot pixel at 4095; and its nucleus mask."""
    image = rng.normal(150, 15, (size, size))
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(3, 6)):
        cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 9)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[disc] = rng.uniform(1000, 3500) + rng.normal(0, 60, int(disc.sum()))
        mask[disc] = 1
    image[rng.integers(size), rng.integers(size)] = 4095
    return np.clip(np.rint(image), 100, 4095).astype(np.uint16), mask


def eight_bit_copy(image: np.ndarray) -> np.ndarray:
    """The conversion a lab does by hand (as BBBC039's 8-bit copy was made), in float64:
    stretched between the image's 0.1th and 99.9th percentiles."""
    low, high = np.percentile(image, [0.1, 99.9])
    return np.rint(255 * np.clip((image - low) / (high - low), 0, 1)).astype(np.uint8)


def write_export(root: Path, ext: str, convert=lambda image: image) -> Path:
    """A CVAT export of `nuclei` fields, images written by OpenCV as `ext` after `convert`."""
    rng = np.random.default_rng(7)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    write_labelmap(root / "labelmap.txt", CLASSES)
    for subset, count in SPLITS.items():
        ids = [f"{subset.lower()}{i}" for i in range(count)]
        for item in ids:
            image, mask = nuclei(rng)
            (root / "JPEGImages").mkdir(exist_ok=True)
            assert cv2.imwrite(str(root / "JPEGImages" / f"{item}{ext}"), convert(image))
            save_rgb(root / "SegmentationClass" / f"{item}.png", to_rgb(mask, CLASSES))
        (root / "ImageSets" / "Segmentation" / f"{subset}.txt").write_text("\n".join(ids) + "\n")
    return root


def train(export: Path, run_dir: Path, *extra: str) -> dict:
    cfg = compose_train(
        [*TINY, f"data.path={export}", f"run_dir={run_dir}", "model=unet", "seed=0",
         "data.crop_size=null", *extra]
    )  # fmt: skip
    return run(cfg)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("depth")
    return {
        "tif12": write_export(root / "tif12", ".tif"),
        "png12": write_export(root / "png12", ".png"),
        "png8": write_export(root / "png8", ".png", eight_bit_copy),
    }


@pytest.fixture(scope="module")
def deep_run(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 12-bit TIFF export trained until it finds the nuclei (~25 s on 2 shared cores)."""
    run_dir = tmp_path_factory.mktemp("depth-run")
    return train(
        exports["tif12"],
        run_dir,
        "trainer.max_epochs=10",
        "optimizer.lr=1e-2",
    )


def test_8bit_images_read_bit_identically_to_opencv_imread_color(tmp_path: Path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: OpenCV turns it, and so must the reader
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "alpha.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    Image.fromarray(rgb).save(tmp_path / "plain.tif")
    cv2.imwrite(str(tmp_path / "plain.bmp"), rgb)
    for path in sorted(tmp_path.iterdir()):
        expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for rule in (Intensity(), Intensity("shift")):  # the default and old checkpoints'
            np.testing.assert_array_equal(read_image(path, rule), expected, err_msg=str(path))
    assert read_image(tmp_path / "rotated.jpg").shape == (40, 30, 3)


def test_a_12bit_image_reads_as_its_8bit_rescaled_copy(exports: dict[str, Path]):
    for name in ("tif12", "png12"):
        for path in sorted((exports[name] / "JPEGImages").iterdir()):
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert raw.dtype == np.uint16 and raw.max() == 4095  # written at full depth
            copy = read_image(exports["png8"] / "JPEGImages" / f"{path.stem}.png")
            image = read_image(path)
            assert image.dtype == np.uint8 and image.shape == (*raw.shape, 3)
            assert np.abs(image.astype(int) - copy).max() <= 1, path
            # What the reader did before: the top 8 bits, 16 levels of an almost black image.
            assert read_image(path, Intensity("shift")).max() <= 15
            assert np.abs(image.astype(int) - copy).mean() < 0.01
            fixed = read_image(path, Intensity.parse({"range": [0, 4095]}))
            np.testing.assert_array_equal(fixed[..., 0], np.rint(raw * (255 / 4095)))
            assert percentiles(raw, (0.1, 99.9)) == pytest.approx(
                tuple(np.percentile(raw, [0.1, 99.9])), abs=1e-6
            )


def test_a_model_trained_at_12_bits_predicts_its_8bit_copies_alike(
    deep_run: dict, exports: dict[str, Path], tmp_path: Path
):
    """Trained on the 12-bit TIFFs, the model finds the nuclei, and scores the same on the
    12-bit test images as on their 8-bit copies: read by >> 8, the 12-bit images would be
    near-black and neither would hold."""
    assert deep_run["test/iou/nucleus"] > 0.7
    hparams = torch.load(deep_run["best_ckpt"], weights_only=True)["hyper_parameters"]
    assert hparams["intensity"] == "auto"
    scores = {}
    for name in ("tif12", "png8"):
        out = tmp_path / name
        summary = predict_run(
            compose_predict(
                [f"ckpt={deep_run['best_ckpt']}", f"input={exports[name] / 'JPEGImages'}",
                 f"labels={exports[name]}", f"output={out}", "device=cpu", "num_workers=0",
                 "progress=false"]
            )
        )  # fmt: skip
        scores[name] = summary["metrics"]["iou/nucleus"]
    assert scores["tif12"] > 0.7 and scores["tif12"] == pytest.approx(scores["png8"], abs=0.01)
    for path in (exports["tif12"] / "JPEGImages").iterdir():
        deep = cv2.imread(str(tmp_path / "tif12" / f"{path.stem}_index.png"), -1)
        copy = cv2.imread(str(tmp_path / "png8" / f"{path.stem}_index.png"), -1)
        assert deep.shape == (64, 64) and (deep == copy).mean() > 0.99, path


def test_16bit_png_export_trains_and_predict_py_writes_masks_at_image_size(
    exports: dict[str, Path], tmp_path: Path
):
    metrics = train(exports["png12"], tmp_path / "run", "trainer.max_epochs=1")
    out = tmp_path / "out"
    summary = predict_run(
        compose_predict(
            [f"ckpt={metrics['best_ckpt']}", f"input={exports['tif12'] / 'JPEGImages'}",
             f"output={out}", "device=cpu", "num_workers=0", "progress=false"]
        )
    )  # fmt: skip
    assert summary["images"] == sum(SPLITS.values()) and not summary["unreadable"]
    for path in (exports["tif12"] / "JPEGImages").iterdir():
        index = cv2.imread(str(out / f"{path.stem}_index.png"), cv2.IMREAD_UNCHANGED)
        assert index.shape == cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape


def test_the_checkpoint_rule_reads_files_uploads_and_survives_old_checkpoints(
    deep_run: dict, exports: dict[str, Path], tmp_path: Path
):
    ckpt = deep_run["best_ckpt"]
    predictor = load_predictor(ckpt, "cpu")
    assert predictor.info.reader == Intensity()
    # The server decodes an upload with the model's rule, whichever it is.
    path = next((exports["tif12"] / "JPEGImages").glob("test*.tif"))
    ranged = dataclasses.replace(predictor.info, intensity={"range": [0.0, 4095.0]})
    server_side = Predictor(predictor.network, ranged, predictor.device)
    prepared = _prepare(path.read_bytes(), path.name, server_side, Limits())
    np.testing.assert_array_equal(prepared.image, read_image(path, ranged.reader))
    assert not np.array_equal(prepared.image, read_image(path))
    # A checkpoint written before the rule existed loads, and reads 16-bit images as it was
    # trained to (>> 8); 8-bit images read alike under any rule.
    state = torch.load(ckpt, weights_only=True)
    del state["hyper_parameters"]["intensity"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    legacy = load_predictor(old, "cpu")
    assert legacy.info.intensity == "shift"
    eight = read_image(exports["png8"] / "JPEGImages" / f"{path.stem}.png")
    np.testing.assert_array_equal(legacy.predict(eight), predictor.predict(eight))
    # ONNX metadata: the rule travels in the ModelInfo JSON; older files read as legacy.
    assert ModelInfo.from_json(predictor.info.to_json()).intensity == "auto"
    old_json = predictor.info.to_json().replace(', "intensity": "auto"', "")
    assert "intensity" not in old_json and ModelInfo.from_json(old_json).intensity == "shift"


def test_bad_intensity_values_name_the_key(exports: dict[str, Path]):
    for value, found in [
        ("bright", "data.intensity='bright'"),
        ("{range:[4095,0]}", "data.intensity.range=[4095, 0]"),
        ("{percentile:[1,101]}", "data.intensity.percentile=[1, 101]"),
    ]:
        cfg = compose_train([*TINY, f"data.path={exports['png8']}", f"data.intensity={value}"])
        with pytest.raises(ConfigError, match="data.intensity") as err:
            validate(cfg)
        assert found in str(err.value) and "expected" in str(err.value)
        assert "e.g." in str(err.value)  # how to write it
    with pytest.raises(ConfigError, match="intensity="):
        check_hparams({"intensity": {"gamma": [1, 2]}})
    assert check_hparams({"intensity": "percentile"}) == {"intensity": {"percentile": [0.1, 99.9]}}


def test_a_depth_the_reader_cannot_map_is_refused_by_name(tmp_path: Path):
    export = write_export(tmp_path / "float", ".tif", lambda image: image.astype(np.float32))
    bad = export / "JPEGImages" / "train0.tif"
    with pytest.raises(DatasetError) as err:
        read_image(bad)
    assert str(bad) in str(err.value) and "float32" in str(err.value)
    assert "16-bit unsigned TIFF" in str(err.value)
    with pytest.raises(DatasetError, match="32-bit floating-point samples"):
        SegmentationDataModule(str(export), num_workers=0).export  # noqa: B018  (the scan)
    done = subprocess.run(
        [sys.executable, "train.py", *TINY, f"data.path={export}", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"{bad}: image of 32-bit floating-point samples" in output
    assert "Traceback" not in output


def test_libtiff_warnings_about_private_tags_are_not_printed(
    tmp_path: Path, capfd: pytest.CaptureFixture
):
    """Microscope TIFFs carry private tags: libtiff warns about each at every read (3 lines
    per BBBC039 image and epoch). The reader silences them and restores OpenCV's log level."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[65000], tags.tagtype[65000] = "private", 2
    path = tmp_path / "tagged.tif"
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(path, tiffinfo=tags)
    cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert "Unknown field with tag 65000" in capfd.readouterr().err  # what OpenCV prints
    level = cv2.utils.logging.getLogLevel()
    assert read_image(path).shape == (8, 8, 3)
    assert "TIFF_Warning" not in capfd.readouterr().err
    assert cv2.utils.logging.getLogLevel() == level
