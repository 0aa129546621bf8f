"""predict.py on real files: inputs, modes, TTA, outputs, scoring, the CVAT export, robustness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.atomic import PARTIAL
from seglab.data.cvat_writer import write_labelmap
from seglab.data.dataset import build_decoder
from seglab.data.errors import DatasetError
from seglab.data.labelmap import SegClass
from seglab.data.layouts import read_export
from seglab.errors import ConfigError
from seglab.prediction import ModelInfo, Predictor, load_checkpoint, load_predictor
from seglab.prediction.geometry import tile_starts
from seglab.prediction.inputs import check_output_names, find_inputs
from seglab.prediction.run import run
from seglab.prediction.writers import MaskWriter
from tests.helpers import ROOT, compose_predict

CPU = torch.device("cpu")
CLASSES_OF_RUN = [SegClass("background", (0, 0, 0)), SegClass("leaf", (51, 221, 255)),
                  SegClass("stone", (250, 50, 83)), SegClass("berry", (52, 209, 183))]  # fmt: skip


def predict(trained_run: dict, output: Path, *overrides: str) -> dict:
    cfg = compose_predict(
        [f"ckpt={trained_run['metrics']['best_ckpt']}", f"output={output}", "device=cpu",
         "num_workers=0", "progress=false", *overrides]
    )  # fmt: skip
    return run(cfg)


def val_list(export: Path, folder: Path) -> Path:
    """A list file of the export's validation images, as a user would write one."""
    ids = (export / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    listed = folder / "val_images.txt"
    listed.write_text(
        "# validation images\n" + "".join(f"{export}/JPEGImages/{i}.jpg\n" for i in ids)
    )
    return listed


def read_index(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# ---------------------------------------------------------------- inputs


def test_inputs_folder_glob_list_and_single_image(tmp_path: Path):
    for rel in ("a.jpg", "sub/b.PNG", "sub/deeper/c.tif", "notes.txt", ".hidden/d.jpg"):
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    folder = find_inputs(tmp_path / "in")
    assert [folder.relative(p).as_posix() for p in folder.images] == [
        "a.jpg",
        "sub/b.PNG",
        "sub/deeper/c.tif",
    ]
    assert sorted(p.name for p in folder.left_out) == ["d.jpg", "notes.txt"]  # reported

    pattern = find_inputs(f"{tmp_path}/in/sub/**/*.*")
    assert pattern.root == tmp_path / "in" / "sub"
    assert [pattern.relative(p).as_posix() for p in pattern.images] == ["b.PNG", "deeper/c.tif"]

    listed = tmp_path / "in" / "list.txt"
    listed.write_text("# two of them\nsub/b.PNG\n\n" + f"{tmp_path}/in/a.jpg\nmissing.jpg\n")
    from_list = find_inputs(listed)
    assert [p.name for p in from_list.images] == ["b.PNG", "a.jpg", "missing.jpg"]
    assert from_list.root == tmp_path / "in"

    single = find_inputs(tmp_path / "in" / "a.jpg")
    assert single.images == [tmp_path / "in" / "a.jpg"]


def test_input_errors_are_clear(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        find_inputs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="matches no image"):
        find_inputs(f"{tmp_path}/*.jpg")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_inputs(tmp_path / "nope")
    for name in ("x.jpg", "x.png"):
        (tmp_path / "clash" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "clash" / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="would overwrite each other: x"):
        check_output_names(find_inputs(tmp_path / "clash"))


# ---------------------------------------------------------------- modes and TTA


def pointwise_predictor(mode: str, **options) -> Predictor:
    """A 1x1 convolution as the network: its logits at a pixel depend on that pixel only, so
    every mode, tiling and flip must give exactly what it gives on the whole image."""
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 4, kernel_size=1).eval()
    info = ModelInfo(
        classes=[{"name": f"c{i}", "color": [i, i, i]} for i in range(4)],
        image_size=(64, 96), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )  # fmt: skip
    return Predictor(network, info, CPU, mode=mode, **options)


def test_slide_tiles_blend_back_to_the_whole_image_logits():
    image = np.random.default_rng(0).integers(0, 256, (150, 203, 3), np.uint8)
    (whole,) = pointwise_predictor("whole").logits([image])
    (slide,) = pointwise_predictor("slide", overlap=0.5, batch_size=3).logits([image])
    assert whole.shape == slide.shape == (4, 150, 203)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)
    # Smaller than a tile: padded up to one tile, cropped back.
    small = image[:40, :50]
    (tile,) = pointwise_predictor("slide").logits([small])
    torch.testing.assert_close(tile, whole[:, :40, :50], atol=1e-5, rtol=1e-5)


def test_flip_tta_un_flips_the_logits():
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), np.uint8)
    (plain,) = pointwise_predictor("whole").logits([image])
    (flipped,) = pointwise_predictor("whole", flip=True).logits([image])
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)


def test_tile_starts_cover_the_image_and_end_flush():
    assert tile_starts(64, 64, 0.25) == [0]
    assert tile_starts(150, 64, 0.5) == [0, 32, 64, 86]
    assert tile_starts(65, 64, 0.0) == [0, 1]


def test_modes_agree_at_the_training_size_and_keep_any_size(trained_run: dict):
    image = cv2.imread(str(next((trained_run["export"] / "JPEGImages").glob("*.jpg"))))[..., ::-1]
    masks = {
        mode: load_predictor(trained_run["metrics"]["best_ckpt"], "cpu", mode=mode).predict(image)
        for mode in ("resize", "whole", "slide")
    }
    np.testing.assert_array_equal(masks["resize"], masks["whole"])
    np.testing.assert_array_equal(masks["resize"], masks["slide"])
    odd = cv2.resize(image, (101, 77))
    for mode in ("resize", "whole", "slide"):
        predictor = load_predictor(
            trained_run["metrics"]["best_ckpt"], "cpu", mode=mode, flip=True, scales=[0.75, 1.0]
        )
        assert predictor.predict(odd).shape == (77, 101)


# ---------------------------------------------------------------- outputs and scoring


def test_outputs_probs_and_scores_equal_training_validation(trained_run: dict, tmp_path: Path):
    out = tmp_path / "out"
    summary = predict(
        trained_run, out, f"input={val_list(trained_run['export'], tmp_path)}",
        "outputs=[index,probs]", f"labels={trained_run['export']}",
    )  # fmt: skip
    assert summary["images"] == 3 and summary["unreadable"] == []
    for index_png in out.glob("*_index.png"):
        probs = np.load(index_png.with_name(index_png.name.replace("_index.png", "_probs.npy")))
        assert probs.dtype == np.float16 and probs.shape == (4, 64, 64)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
        agree = (probs.argmax(0) == read_index(index_png)).mean()
        assert agree > 0.99  # float16 rounding may flip a near tie
    assert not list(out.glob("*_color.png")) and not list(out.glob("*_overlay.jpg"))

    # The same checkpoint, images and masks as train.py's validation: the same pixel counts,
    # the same numbers (train.py logs them as float32).
    confusion = (out / "confusion.csv").read_text()
    assert confusion == (trained_run["run_dir"] / "confusion_val.csv").read_text()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mIoU"] == pytest.approx(trained_run["metrics"]["val/mIoU"], abs=1e-6)
    for name in ("background", "leaf", "stone", "berry"):
        expected = trained_run["metrics"][f"val/iou/{name}"]
        assert saved[f"iou/{name}"] == (None if expected is None else pytest.approx(expected))
    assert saved["scored_images"] == 3 and (out / "confusion.csv").is_file()


def test_scoring_reports_unlabeled_images_and_refuses_wrong_sizes(
    trained_run: dict, tmp_path: Path
):
    export = trained_run["export"]
    labels = tmp_path / "labels"
    ids = sorted(p.stem for p in (export / "SegmentationClass").glob("*.png"))
    labels.mkdir()
    for item in ids[:2]:  # masks for two images only, coloured with the labelmap's colours
        (labels / f"{item}.png").write_bytes(
            (export / "SegmentationClass" / f"{item}.png").read_bytes()
        )
    summary = predict(
        trained_run, tmp_path / "out", f"input={export / 'JPEGImages'}", f"labels={labels}"
    )
    assert summary["metrics"]["scored_images"] == 2
    assert len(summary["metrics"]["unscored_images"]) == len(ids) - 2

    mask = cv2.imread(str(labels / f"{ids[0]}.png"))
    cv2.imwrite(
        str(labels / f"{ids[0]}.png"), cv2.resize(mask, (32, 32), interpolation=cv2.INTER_NEAREST)
    )
    with pytest.raises(DatasetError, match="mask is 32x32 but image .* is 64x64"):
        predict(
            trained_run, tmp_path / "out2", f"input={export / 'JPEGImages'}", f"labels={labels}"
        )


def test_scoring_matches_labels_by_name_and_leaves_out_other_labels(
    trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """A labelmap in another order, with a `void` label the model never learned."""
    export = trained_run["export"]
    item = sorted(p.stem for p in (export / "SegmentationClass").glob("*.png"))[0]
    labels = tmp_path / "labels"
    labels.mkdir()
    reordered = [SegClass("void", (9, 9, 9)), SegClass("berry", (1, 2, 3)),
                 SegClass("stone", (250, 50, 83)), SegClass("leaf", (51, 221, 255)),
                 SegClass("background", (0, 0, 0))]  # fmt: skip
    write_labelmap(labels / "labelmap.txt", reordered)
    original = cv2.imread(str(export / "SegmentationClass" / f"{item}.png"))[..., ::-1].copy()
    berry = (original == (52, 209, 183)).all(axis=-1)
    recoloured = original.copy()
    recoloured[berry] = (1, 2, 3)
    recoloured[:4] = (9, 9, 9)  # four rows of void
    cv2.imwrite(str(labels / f"{item}.png"), recoloured[..., ::-1])
    image = export / "JPEGImages" / f"{item}.jpg"

    scored = predict(trained_run, tmp_path / "a", f"input={image}", f"labels={labels}")
    assert "labels the model does not predict are not scored: void" in capsys.readouterr().out
    # The same as scoring the original mask with those four rows left out.
    reference = tmp_path / "reference"
    reference.mkdir()
    original[:4] = (224, 224, 192)
    write_labelmap(reference / "labelmap.txt", [*CLASSES_OF_RUN, SegClass("void", (224, 224, 192))])
    cv2.imwrite(str(reference / f"{item}.png"), original[..., ::-1])
    expected = predict(trained_run, tmp_path / "b", f"input={image}", f"labels={reference}")
    assert scored["metrics"] == expected["metrics"]


# ---------------------------------------------------------------- back into CVAT


def test_cvat_export_round_trips_through_the_parser(trained_run: dict, tmp_path: Path):
    images = tmp_path / "frames"
    (images / "shift 2").mkdir(parents=True)
    for i, src in enumerate(sorted((trained_run["export"] / "JPEGImages").glob("*.jpg"))[:4]):
        target = images / ("shift 2" if i % 2 else "") / src.name
        target.write_bytes(src.read_bytes())
    out = tmp_path / "out"
    summary = predict(
        trained_run, out, f"input={images}", "format=cvat", "outputs=[index]", "cvat_min_area=0"
    )
    archive = Path(summary["cvat_export"])
    assert archive == out / "cvat_export.zip"
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"labelmap.txt", "ImageSets/Segmentation/default.txt"} <= names
    assert sum(n.startswith("SegmentationObject/") for n in names) == 4
    assert not any(n.startswith("JPEGImages/") for n in names)  # annotations only, by default

    export = read_export(archive, images_dir=images)
    assert export.class_names == ["background", "leaf", "stone", "berry"]
    decoder = build_decoder(export)
    assert len(export.samples) == 4
    for sample in export.samples:
        predicted = read_index(out / f"{sample.id}_index.png")
        np.testing.assert_array_equal(decoder(sample.mask), predicted)

    with_images = predict(
        trained_run, tmp_path / "out2", f"input={images}", "format=cvat", "cvat_images=true"
    )
    assert len(read_export(with_images["cvat_export"]).samples) == 4  # no images_dir needed


def test_a_failed_or_killed_run_keeps_the_previous_outputs(
    trained_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The previous zip, masks and metrics.json survive an error and a kill -9 mid-run; the
    next run removes the killed run's partial files; every output's mode follows the umask."""
    images = trained_run["export"] / "JPEGImages"
    out = tmp_path / "out"
    options = [f"input={images}", "format=cvat", "outputs=[index]",
               f"labels={trained_run['export']}"]  # fmt: skip
    archive = Path(predict(trained_run, out, *options)["cvat_export"])
    before = {p: p.read_bytes() for p in [archive, out / "metrics.json", *out.glob("*.png")]}

    write = MaskWriter.write
    calls = []

    def failing(self, *args) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected while predicting")
        write(self, *args)

    monkeypatch.setattr(MaskWriter, "write", failing)
    with pytest.raises(RuntimeError, match="injected"):
        predict(trained_run, out, *options)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in before} == before
    assert not list(out.rglob(f".*{PARTIAL}*"))

    ckpt = trained_run["metrics"]["best_ckpt"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_ONE_IMAGE, f"ckpt={ckpt}", f"output={out}",
         "device=cpu", "num_workers=0", "progress=false", *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert {p: p.read_bytes() for p in before} == before
    assert [p.name for p in out.glob(f".{archive.name}{PARTIAL}*")]  # the kill left it

    previous = os.umask(0o027)
    try:
        again = predict(trained_run, out, *options)
    finally:
        os.umask(previous)
    assert not list(out.rglob(f".*{PARTIAL}*"))
    predicted = read_export(again["cvat_export"], images_dir=images).samples
    assert len(predicted) == len(list(images.glob("*.jpg")))
    for path in (archive, out / "metrics.json", out / "confusion.csv", *out.glob("*_index.png")):
        assert path.stat().st_mode & 0o777 == 0o640, path


KILLED_AFTER_ONE_IMAGE = """
import os, signal, sys
from seglab.prediction.run import run
from seglab.prediction.writers import MaskWriter
from tests.helpers import compose_predict
write = MaskWriter.write
def write_then_die(self, *args):
    write(self, *args)
    os.kill(os.getpid(), signal.SIGKILL)
MaskWriter.write = write_then_die
run(compose_predict(sys.argv[1:]))
"""


# ---------------------------------------------------------------- robustness


def test_odd_images_are_converted_as_in_training_and_unreadable_ones_skipped(
    trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture
):
    images = tmp_path / "odd"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50), np.uint8)).save(images / "gray.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 4), np.uint8)).save(images / "alpha.png")
    cv2.imwrite(str(images / "deep.png"), rng.integers(0, 65535, (40, 50), np.uint16))
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    summary = predict(trained_run, tmp_path / "out", f"input={images}")
    assert summary["images"] == 3 and summary["unreadable"] == [str(images / "broken.jpg")]
    for name in ("gray", "alpha", "deep"):
        assert read_index(tmp_path / "out" / f"{name}_index.png").shape == (40, 50)
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable file(s)" in printed
    assert (
        "1 image(s) grayscale (repeated to 3 channels), 16-bit (mapped to 8 bits by "
        "data.intensity=auto)" in printed
    )
    assert "1 image(s) with an alpha channel (dropped)" in printed


def test_bad_options_and_paths_are_refused(trained_run: dict, tmp_path: Path):
    source = f"input={trained_run['export'] / 'JPEGImages'}"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is an existing file"):
        predict(trained_run, tmp_path / "file", source)
    with pytest.raises(ValueError, match="outputs=.*choose from"):
        predict(trained_run, tmp_path / "o", source, "outputs=[index,heatmap]")
    with pytest.raises(ValueError, match="mode='tiles'"):
        predict(trained_run, tmp_path / "o", source, "mode=tiles")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            predict(trained_run, tmp_path / "o", source, "device=cuda")


def test_checkpoints_from_other_versions(trained_run: dict, tmp_path: Path, capsys):
    state = torch.load(trained_run["metrics"]["best_ckpt"], map_location="cpu", weights_only=True)
    state["hyper_parameters"]["seglab_version"] = "0.0.1"
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    load_checkpoint(older, CPU)  # still loads, with a note
    assert f"written by seglab 0.0.1; this is {seglab.__version__}" in capsys.readouterr().out

    state["state_dict"] = {k.replace("net.", "network."): v for k, v in state["state_dict"].items()}
    renamed = tmp_path / "renamed.ckpt"
    torch.save(state, renamed)
    with pytest.raises(ValueError, match="written by seglab 0.0.1, which this seglab .* cannot"):
        load_checkpoint(renamed, CPU)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable seglab checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt", CPU)


def test_prediction_never_imports_the_training_stack(trained_run: dict, tmp_path: Path):
    """predict.py rebuilds the network alone: Lightning and torchmetrics (~250 MiB resident)
    and albumentations stay unimported, which the 2 GiB bound on huge images needs. Python's
    `-X importtime` lists every module the command imported."""
    ckpt = trained_run["metrics"]["best_ckpt"]
    images = trained_run["export"] / "JPEGImages"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "predict.py", f"ckpt={ckpt}", f"input={images}",
         f"output={tmp_path / 'out'}", "device=cpu", "progress=false", "mode=slide"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "torch" in imported and "segmentation_models_pytorch" in imported
    training_only = {"lightning", "pytorch_lightning", "torchmetrics", "albumentations"}
    assert not imported & training_only
    assert list((tmp_path / "out").iterdir())


def test_batch_size_auto_is_one_on_a_cpu_and_eight_on_a_gpu():
    """predict.py's default: one image or tile per forward pass on a CPU (faster there, and
    the streamed path's memory bound depends on it), a batch on a GPU; nonsense is refused."""
    from seglab.prediction.predictor import resolve_batch_size

    assert compose_predict(["ckpt=x"]).batch_size == "auto"
    assert resolve_batch_size("auto", CPU) == 1
    assert resolve_batch_size("auto", torch.device("cuda")) == 8
    assert resolve_batch_size(3, CPU) == 3
    for wrong in (0, "eight", 2.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            resolve_batch_size(wrong, CPU)
