"""data.sampling=tile: windows at native resolution, windowed TIFF reads, the decoded-image
cache, rare-class windows, and sliding-window evaluation equal to predict.py's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from seglab.config import validate
from seglab.data.datamodule import SegmentationDataModule
from seglab.data.dataset import read_image
from seglab.data.intensity import Intensity
from seglab.data.tiff_windows import TiledTiff, WindowReader
from seglab.data.tiles import ByteCache, windows_per_image
from seglab.errors import ConfigError
from seglab.prediction.run import run as predict_run
from seglab.training import run
from tests.exports import striped, write_cvat
from tests.helpers import TINY, compose_predict, compose_train

WINDOW = (32, 32)
SHAPES = {  # (height, width): larger than the window, one smaller on a side (padded)
    "train": {"a": (96, 128), "b": (80, 100), "c": (20, 40)},
    "val": {"d": (70, 90)},
    "test": {"e": (96, 128), "f": (50, 75)},
}


def position_coded(height: int, width: int, number: int) -> np.ndarray:
    """RGB pixels that say where they are: red = row, green = column, blue = the image."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols, np.full_like(rows, number)], axis=2).astype(np.uint8)


@pytest.fixture(scope="module")
def coded_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiles") / "export"
    subsets = {
        split: {item: striped(h, w) for item, (h, w) in items.items()}
        for split, items in SHAPES.items()
    }
    write_cvat(root, subsets, image_ext=".png")
    for number, item in enumerate(i for items in SHAPES.values() for i in items):
        path = root / "JPEGImages" / f"{item}.png"
        h, w = cv2.imread(str(path)).shape[:2]
        cv2.imwrite(str(path), position_coded(h, w, number)[..., ::-1])  # RGB -> BGR
    return root


def tile_datamodule(path: Path, **options) -> SegmentationDataModule:
    return SegmentationDataModule(
        str(path), image_size=list(WINDOW), sampling="tile", num_workers=0, **options
    )


def test_windows_are_cut_at_native_resolution(coded_export: Path):
    dm = tile_datamodule(coded_export)
    train = dm.dataset("train", train=True)
    counts = [windows_per_image(s, WINDOW) for s in SHAPES["train"].values()]
    assert counts == [12, 8, 1] and len(train) == sum(counts)
    train.set_random_seed(0)
    corners = set()
    for k in range(len(train)):
        sample = train[k]
        image = sample["image"].permute(1, 2, 0).numpy()
        mask = sample["mask"].numpy()
        source = train.base.samples[int(sample["index"])].image
        whole = read_image(source)
        height, width = whole.shape[:2]
        top, left = int(image[0, 0, 0]), int(image[0, 0, 1])  # where the window was cut
        h, w = min(WINDOW[0], height - top), min(WINDOW[1], width - left)
        assert image.shape == (*WINDOW, 3)
        np.testing.assert_array_equal(image[:h, :w], whole[top : top + h, left : left + w])
        np.testing.assert_array_equal(mask[:h, :w], striped(height, width)[top : top + h, :w])
        assert (image[h:] == 0).all() and (mask[h:] == 255).all()  # padded: ignored
        assert (image[:, w:] == 0).all() and (mask[:, w:] == 255).all()
        corners.add((int(sample["index"]), top, left))
    assert len(corners) > 15  # random places, not one fixed crop


def tiff_cases(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    rng = np.random.default_rng(0)
    images = {
        "rgb8": (rng.integers(0, 256, (100, 130, 3)).astype(np.uint8), "rgb", 3),
        "gray16": (rng.integers(100, 3000, (100, 130)).astype(np.uint16), "minisblack", 3),
        "bands16": (rng.integers(0, 60000, (100, 130, 5)).astype(np.uint16), "minisblack", 5),
    }
    cases = {}
    for name, (array, photometric, channels) in images.items():
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(
            path, array, tile=(32, 48), photometric=photometric, compression="zlib",
            planarconfig="contig" if array.ndim == 3 else None,
        )  # fmt: skip
        cases[name] = (path, channels)
    return cases


@pytest.mark.parametrize("rule", ["auto", "percentile", {"range": [0, 4095]}, "shift"])
def test_windowed_tiff_read_equals_the_whole_read(tmp_path: Path, rule, monkeypatch):
    decoded = []
    original = TiledTiff._decode
    monkeypatch.setattr(
        TiledTiff, "_decode", lambda self, tiff, i: decoded.append(i) or original(self, tiff, i)
    )
    intensity = Intensity.parse(rule)
    for name, (path, channels) in tiff_cases(tmp_path).items():
        tiled = TiledTiff.probe(path)
        assert tiled is not None, name
        reader = WindowReader(tiled, intensity, channels)
        reader.tiff.bounds(intensity) if intensity.rule in ("auto", "percentile") else None
        decoded.clear()
        window = reader.read(40, 50, 20, 30)  # rows 40-59, columns 50-79: tiles (1, 1) only
        assert decoded == [4], name  # 3 tiles across: row 1, column 1
        whole = read_image(path, intensity, channels)
        np.testing.assert_array_equal(window, whole[40:60, 50:80], err_msg=f"{name} {rule}")
        window = reader.read(17, 29, 83, 101)  # across tile borders, to the image's edges
        np.testing.assert_array_equal(window, whole[17:100, 29:130], err_msg=f"{name} {rule}")


def test_untiled_or_non_tiff_images_are_not_read_by_window(tmp_path: Path):
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    assert TiledTiff.probe(path) is None
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((64, 64, 3), np.uint8))
    assert TiledTiff.probe(png) is None


def test_the_cache_bounds_its_bytes():
    cache = ByteCache(1000, lambda a: a.nbytes)
    made = []

    def make(key: int) -> np.ndarray:
        made.append(key)
        return np.zeros(400, np.uint8)

    for key in [0, 1, 0, 2, 3, 0]:
        cache.get(key, lambda k=key: make(k))
        assert cache.bytes <= 1000
    assert made == [0, 1, 2, 3, 0]  # 0 hit once, then evicted by 2 and 3 (least recently used)
    assert len(cache) == 2 and cache.bytes == 800
    big = cache.get("big", lambda: np.zeros(2000, np.uint8))
    assert big.nbytes == 2000 and "big" not in cache._items and cache.bytes == 800


def test_an_image_is_decoded_once_for_its_windows(coded_export: Path, monkeypatch):
    import seglab.data.tiles as tiles

    reads = []
    monkeypatch.setattr(tiles, "read_image", lambda p, *a: reads.append(p) or read_image(p, *a))
    train = tile_datamodule(coded_export).dataset("train", train=True)
    for k in range(len(train)):
        train[k]
    assert len(reads) == 3  # 21 windows of 3 images
    reads.clear()
    small = tile_datamodule(coded_export, tile_cache_mb=0).dataset("train", train=True)
    for k in range(len(small)):
        small[k]
    assert len(reads) == len(small)  # no cache: every window decodes its image


def test_rare_class_windows_contain_the_rare_class_more_often(tmp_path: Path):
    mask = np.zeros((96, 128), np.uint8)
    mask[70:74, 100:104] = 1  # the rare class: 16 of 12288 pixels
    mask[:, :8] = 2
    root = write_cvat(tmp_path / "export", {"train": {"a": mask}, "val": {"b": mask}})

    def share(rare: float, seed: int = 0) -> float:
        train = tile_datamodule(root, rare_class_windows=rare).dataset("train", train=True)
        train.set_random_seed(seed)
        hits = [bool((train[k % len(train)]["mask"] == 1).any()) for k in range(200)]
        return sum(hits) / len(hits)

    # Uniform: the 4x4 patch is in ~15% of 32x32 windows; with 0.8, ~0.8 * 0.98 (the rare
    # class's weight among the three) + 0.2 * 0.15 = 0.81.
    uniform, preferred = share(0.0), share(0.8)
    assert uniform < 0.25 and preferred > 0.65 and preferred > 3 * uniform, (uniform, preferred)
    assert share(0.8, seed=1) == share(0.8, seed=1)  # the seed decides


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampling": "tiles"}, "data.sampling='tiles': choose resize"),
        ({"sampling": "tile", "rare_class_windows": 1.5}, "data.rare_class_windows=1.5"),
        ({"sampling": "tile", "tile_cache_mb": -1}, "data.tile_cache_mb=-1"),
    ],
)
def test_bad_tile_options_are_named(tmp_path: Path, options: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        SegmentationDataModule(str(tmp_path), **options)


def test_a_second_window_size_is_refused(coded_export: Path):
    dm = tile_datamodule(coded_export, crop_size=[64, 64])
    with pytest.raises(ConfigError, match=r"data.crop_size=\[64, 64\] with data.sampling=tile"):
        dm.crop_size  # noqa: B018


def test_config_checks_name_the_tile_keys(tmp_path: Path):
    cfg = compose_train([f"run_dir={tmp_path}", "data.sampling=tiles", "data.rare_class_windows=2"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "data.sampling: expected resize or tile" in str(err.value)
    assert "data.rare_class_windows: expected a number <= 1.0" in str(err.value)


def test_tile_training_evaluates_by_sliding_windows_as_predict_py(
    coded_export: Path, tmp_path: Path
):
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("data.image_size")]
    metrics = run(
        compose_train(
            [*overrides, f"data.path={coded_export}", f"run_dir={run_dir}", "logger=none",
             "trainer.max_epochs=1", "data.image_size=[32,32]", "data.sampling=tile",
             "data.rare_class_windows=0.5", "data.batch_size=8",
             # stride 2: after this one epoch the full-resolution stage (auto) still
             # predicts one class everywhere, and the counts below need two
             "model.decoder_output_stride=2"]
        )
    )  # fmt: skip
    hparams = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)[
        "hyper_parameters"
    ]
    assert hparams["sampling"] == "tile" and list(hparams["image_size"]) == list(WINDOW)
    report = (run_dir / "report.html").read_text()  # its gallery read the slide predictions
    assert "32×32 windows at native resolution" in report
    test_list = tmp_path / "test.txt"
    test_list.write_text("".join(f"{coded_export}/JPEGImages/{i}.png\n" for i in SHAPES["test"]))
    out = tmp_path / "predicted"
    predict_run(
        compose_predict(
            [f"ckpt={metrics['best_ckpt']}", f"input={test_list}", f"output={out}",
             f"labels={coded_export}", "device=cpu", "num_workers=0", "progress=false",
             "outputs=[index]"]
        )
    )  # fmt: skip
    # mode=auto slides over tile-trained models; the pixels counted are every test pixel at
    # its own size, and the counts are those of the test step's sliding windows.
    confusion = np.loadtxt(out / "confusion.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    assert confusion.sum() == sum(h * w for h, w in SHAPES["test"].values())
    assert (out / "confusion.csv").read_text() == (run_dir / "confusion_test.csv").read_text()
    # Not one class everywhere, so resize-mode evaluation would count differently (it does:
    # predict.py mode=resize gives other counts here).
    assert (confusion.sum(axis=0) > 0).sum() >= 2


def test_wandb_images_of_tile_batches_use_the_slide_predictions():
    from types import SimpleNamespace

    import wandb

    from seglab.callbacks import WandbPredictions
    from seglab.data.tiles import SlideCollate, SlideEvalTransform

    transform = SlideEvalTransform()
    samples = [
        transform(image=position_coded(h, w, 0), mask=striped(h, w))
        for h, w in [(40, 50), (30, 70)]
    ]
    batch = SlideCollate(255)(samples)
    predictions = [torch.ones(40, 50, dtype=torch.long), torch.zeros(30, 70, dtype=torch.long)]
    callback = WandbPredictions(num_images=1)
    callback.on_validation_batch_end(
        SimpleNamespace(loggers=[]), None, {"predictions": predictions}, batch, 0
    )  # no W&B logger: nothing kept
    assert callback._batch is None
    callback._batch = {key: value[:1] for key, value in batch.items()}
    callback._predictions = predictions[:1]
    module = SimpleNamespace(hparams=SimpleNamespace(ignore_index=255))
    (image,) = callback._images(module, ["background", "tool", "blood vessel"])
    assert isinstance(image, wandb.Image)
    assert image._masks["prediction"]._val["mask_data"].tolist() == predictions[0].tolist()


def test_loader_workers_draw_windows_from_the_seed(coded_export: Path):
    import lightning as L

    def windows(seed: int) -> list[tuple[int, int, int]]:
        L.seed_everything(seed, workers=True)
        dm = SegmentationDataModule(
            str(coded_export), image_size=list(WINDOW), sampling="tile", num_workers=2,
            batch_size=1,
        )  # fmt: skip
        return [  # (image, top, left) of each window, read from its position-coded pixels
            (int(b["index"]), int(b["image"][0, 0, 0, 0]), int(b["image"][0, 1, 0, 0]))
            for b in dm.train_dataloader()
        ]

    assert windows(0) == windows(0)  # the seed decides, in worker processes too


def test_each_worker_seeds_its_window_generator(coded_export: Path, monkeypatch):
    from types import SimpleNamespace

    import seglab.data.seeding as seeding

    train = tile_datamodule(coded_export).dataset("train", train=True)
    monkeypatch.setattr(seeding, "get_worker_info", lambda: SimpleNamespace(dataset=train))
    draws = []
    for worker in (0, 1):
        torch.manual_seed(1000 + worker)  # what PyTorch gives each worker
        seeding.seed_loader_worker(worker)
        expected = np.random.default_rng(torch.initial_seed() % 2**32).integers(1 << 30)
        draws.append(int(train.rng.integers(1 << 30)))
        assert draws[-1] == expected
    assert draws[0] != draws[1]


def test_the_report_says_tile_sampling():
    from seglab.report.run_report import _size

    assert _size({"image_size": [32, 32], "crop_size": [32, 32], "sampling": "tile"}) == (
        "32×32 windows at native resolution, evaluated by sliding windows"
    )
    assert _size({"image_size": [64, 64], "crop_size": [32, 32]}) == "64×64, crops 32×32"


def test_mode_auto_slides_for_tile_trained_models_only():
    from seglab.prediction.info import ModelInfo
    from seglab.prediction.predictor import Predictor

    classes = [{"name": "background", "color": [0, 0, 0]}]
    common = {"classes": classes, "image_size": (32, 32), "mean": (0.5,) * 3, "std": (0.2,) * 3}
    for sampling, mode in [("tile", "slide"), ("resize", "resize")]:
        info = ModelInfo(**common, sampling=sampling)
        assert Predictor(lambda x: x, info, torch.device("cpu")).mode == mode
        assert Predictor(lambda x: x, info, torch.device("cpu"), mode="whole").mode == "whole"
    old = ModelInfo.from_json(ModelInfo(**common).to_json().replace(', "sampling": "resize"', ""))
    assert old.sampling == "resize"  # ONNX metadata written before sampling was stored


def test_a_checkpoint_sampling_is_checked_as_data():
    from seglab.models.hparams import check_hparams

    assert check_hparams({"sampling": "tile"}) == {"sampling": "tile"}
    with pytest.raises(
        ConfigError, match=r"sampling='tiles': expected one of \['resize', 'tile'\]"
    ):
        check_hparams({"sampling": "tiles"})


def test_tiled_tiff_exports_train_on_windows_read_by_window(tmp_path: Path, monkeypatch):
    subsets = {"train": {"a": striped(100, 130)}, "val": {"b": striped(100, 130)}}
    root = write_cvat(tmp_path / "export", subsets, image_ext=".tif")
    rng = np.random.default_rng(0)
    for item in ("a", "b"):
        pixels = rng.integers(100, 3000, (100, 130)).astype(np.uint16)
        tifffile.imwrite(root / "JPEGImages" / f"{item}.tif", pixels, tile=(32, 48),
                         photometric="minisblack", compression="zlib")  # fmt: skip
    image = root / "JPEGImages" / "a.tif"
    train = tile_datamodule(root).dataset("train", train=True)
    monkeypatch.setattr(train, "place", lambda source: (17, 29))
    sample = train[0]
    assert train.cache.get(0, lambda: None).reader is not None  # read a window at a time
    whole = read_image(image)  # data.intensity=auto: 16-bit stretched by the whole image
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), whole[17:49, 29:61])
    np.testing.assert_array_equal(sample["mask"].numpy(), striped(100, 130)[17:49, 29:61])
