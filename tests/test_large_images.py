"""`mode=slide` on images too large for whole-image logits: strip-by-strip blending equal to the
whole-image algorithm, streamed outputs equal to the usual ones, and a memory bound."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seglab.atomic import PARTIAL
from seglab.errors import ConfigError
from seglab.prediction import ModelInfo, Predictor
from seglab.prediction.geometry import pad_to, tile_starts, tile_window
from seglab.prediction.run import run
from seglab.prediction.streaming import PngStream
from tests.helpers import ROOT, compose_predict

CPU = torch.device("cpu")


def conv_predictor(classes: int = 5, tile: tuple[int, int] = (96, 128), **options) -> Predictor:
    """A small random network whose logits at a pixel depend on its neighbours (5x5 reach), so
    that tiles, padding and blending all show in the result."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, classes, 3, padding=1),
    ).eval()
    info = ModelInfo(
        classes=[{"name": f"c{i}", "color": [i * 40 % 256, i * 80 % 256, i * 20 % 256]}
                 for i in range(classes)],
        image_size=tile, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )  # fmt: skip
    return Predictor(network, info, CPU, mode="slide", **options)


@torch.inference_mode()
def whole_image_slide(predictor: Predictor, images: list[np.ndarray]) -> list[torch.Tensor]:
    """`Predictor._slide` as it was before strips: sums and weights for each whole image."""
    tile_h, tile_w = predictor.info.image_size
    window = tile_window(tile_h, tile_w, predictor.overlap, CPU)
    tiles = [(i, t, le) for i, im in enumerate(images)
             for t in tile_starts(im.shape[0], tile_h, predictor.overlap)
             for le in tile_starts(im.shape[1], tile_w, predictor.overlap)]  # fmt: skip
    sums: list[torch.Tensor | None] = [None] * len(images)
    weights = [torch.zeros((1, max(im.shape[0], tile_h), max(im.shape[1], tile_w)))
               for im in images]  # fmt: skip
    for start in range(0, len(tiles), predictor.batch_size):
        chunk = tiles[start : start + predictor.batch_size]
        crops = [images[i][t : t + tile_h, le : le + tile_w] for i, t, le in chunk]
        batch = torch.cat([pad_to(predictor._normalise([c]), tile_h, tile_w) for c in crops])
        for (i, top, left), logits in zip(chunk, predictor._run(batch), strict=True):
            if sums[i] is None:
                sums[i] = logits.new_zeros((logits.shape[0], *weights[i].shape[1:]))
            sums[i][:, top : top + tile_h, left : left + tile_w] += logits * window
            weights[i][:, top : top + tile_h, left : left + tile_w] += window
    return [
        (s / w)[:, : im.shape[0], : im.shape[1]]
        for s, w, im in zip(sums, weights, images, strict=True)
    ]


def test_strips_are_the_whole_image_slide_result_bit_for_bit():
    rng = np.random.default_rng(0)
    sizes = [(1100, 1500), (50, 60), (96, 128), (97, 300)]  # large, under a tile, a tile, odd
    images = [rng.integers(0, 256, (*size, 3), np.uint8) for size in sizes]
    predictor = conv_predictor(batch_size=3)
    expected = whole_image_slide(predictor, images)
    for got, want in zip(predictor.logits(images), expected, strict=True):
        assert torch.equal(got, want)
    strips = list(predictor.slide_strips(images[0]))
    assert [top for top, _ in strips][:3] == [0, 72, 144] and len(strips) == 15
    assert torch.equal(torch.cat([logits for _, logits in strips], dim=1), expected[0])
    (labels,) = predictor.labels(images[:1])
    np.testing.assert_array_equal(labels, expected[0].argmax(0).numpy().astype(np.uint8))
    with pytest.raises(ConfigError, match=r"tta.scales=\[1.0\]"):
        list(conv_predictor(scales=[0.5, 1.0]).slide_strips(images[1]))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_stream_decodes_as_written(dtype: type):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, np.iinfo(dtype).max, (37, 53), dtype)
    gray[10:20] = 3  # runs, as in masks
    color = rng.integers(0, 256, (37, 53, 3), np.uint8)
    for array, channels in ((gray, 1), (color, 3)):
        buffer = io.BytesIO()
        png = PngStream(buffer, 53, 37, array.dtype, channels)
        for top in range(0, 37, 8):
            png.write(array[top : top + 8])
        png.close()
        decoded = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(decoded if channels == 1 else decoded[..., ::-1], array)


def large_image(path: Path, height: int, width: int) -> Path:
    """Smooth shapes, so that the predictions have regions and edges like a real scene."""
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), np.uint8)
    cv2.imwrite(str(path), cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
    return path


def test_large_images_stream_the_outputs_of_the_usual_path(
    trained_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The same files, pixel for pixel (the overlay JPEG byte for byte; probabilities to float16
    rounding), and the same CVAT export, whether an image goes the usual way or strip by strip;
    a failure mid-image leaves the previous outputs whole."""
    images = tmp_path / "in"
    images.mkdir()
    large_image(images / "big.png", 300, 380)
    cv2.imwrite(str(images / "small.png"), np.full((40, 50, 3), 120, np.uint8))
    common = [f"ckpt={trained_run['metrics']['best_ckpt']}", f"input={images}", "device=cpu",
              "mode=slide", "progress=false", "outputs=[index,color,overlay,probs]",
              "format=cvat", "batch_size=4"]  # fmt: skip
    usual = run(compose_predict([*common, f"output={tmp_path / 'a'}", "stream_pixels=null"]))
    streamed = run(compose_predict([*common, f"output={tmp_path / 'b'}", "stream_pixels=10000"]))
    assert usual["images"] == streamed["images"] == 2
    for name in ("big", "small"):
        a, b = tmp_path / "a" / name, tmp_path / "b" / name
        for suffix in ("_index.png", "_color.png"):
            want = cv2.imread(f"{a}{suffix}", cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(cv2.imread(f"{b}{suffix}", cv2.IMREAD_UNCHANGED), want)
        assert Path(f"{a}_overlay.jpg").read_bytes() == Path(f"{b}_overlay.jpg").read_bytes()
        # The same logits; softmax's vectorised exp may differ in the last bit at array ends.
        np.testing.assert_allclose(np.load(f"{a}_probs.npy"), np.load(f"{b}_probs.npy"), atol=1e-3)
    assert len(np.unique(cv2.imread(str(tmp_path / "a" / "big_index.png"), -1))) > 1
    assert usual["cvat_dropped_regions"] == streamed["cvat_dropped_regions"]

    before = {p: p.read_bytes() for p in (tmp_path / "b").iterdir() if p.name.startswith("big")}
    original = Predictor.slide_strips

    def failing(self, image):
        for count, strip in enumerate(original(self, image)):
            if count == 3:
                raise RuntimeError("injected mid-image")
            yield strip

    monkeypatch.setattr(Predictor, "slide_strips", failing)
    with pytest.raises(RuntimeError, match="injected"):
        run(compose_predict([*common, f"output={tmp_path / 'b'}", "stream_pixels=10000"]))
    assert {p: p.read_bytes() for p in before} == before
    assert not list((tmp_path / "b").rglob(f".*{PARTIAL}*"))

    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"big.png: 1 image\(s\) over stream_pixels"):
        run(compose_predict([*common, f"output={tmp_path / 'c'}", "stream_pixels=10000",
                             "tta.scales=[0.5,1.0]"]))  # fmt: skip


MEASURE = """
import json, resource, sys
from pathlib import Path
import numpy as np
import torch
from seglab.prediction.streaming import predict_streamed
from seglab.prediction.writers import MaskWriter
from tests.test_large_images import conv_predictor

torch.set_num_threads(2)
height, width, classes = (int(arg) for arg in sys.argv[1:4])
out = Path(sys.argv[4])
predictor = conv_predictor(classes, tile=(256, 256), batch_size=4)
image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
list(predictor.slide_strips(image[:300, :300]))  # warm up: lazy allocations, thread pools
kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = kib()
writer = MaskWriter(out, ["index", "color", "overlay"], predictor.info, 0.5)
predict_streamed(predictor, image, Path("big.png"), writer)
print(json.dumps({"before_kib": before, "peak_kib": kib()}))
"""


def test_a_large_slide_prediction_stays_under_a_memory_bound(tmp_path: Path):
    """4000x3000 with 8 classes, in a fresh process: the peak memory grows by less than a
    third of what whole-image float32 logits alone would take (8 x 12 Mpx x 4 B = 366 MiB;
    the usual path holds ~3 such arrays at once). What the streamed path holds: the strip
    buffer (8 x 256 x 4000 x 4 B = 31 MiB), a strip's labels, colours and probabilities, and
    the overlay JPEG's encoding of the image (36 MB) that the process already had."""
    height, width, classes = 3000, 4000, 8
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(height), str(width), str(classes), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    grown_mib = (measured["peak_kib"] - measured["before_kib"]) / 1024
    logits_mib = classes * height * width * 4 / 2**20
    print(f"peak grew by {grown_mib:.0f} MiB; whole-image logits: {logits_mib:.0f} MiB")
    assert grown_mib < logits_mib / 3
    index = cv2.imread(str(tmp_path / "big_index.png"), cv2.IMREAD_UNCHANGED)
    assert index.shape == (height, width) and (tmp_path / "big_overlay.jpg").stat().st_size > 0


def test_large_images_are_read_as_the_usual_path_reads_them(tmp_path: Path):
    """`read_large_image` decodes 8-bit files into one array (no copy of the whole image) and
    hands 16-bit ones to `read_image`: the same pixels either way."""
    from seglab.data.dataset import read_image
    from seglab.data.intensity import Intensity
    from seglab.prediction.streaming import read_large_image

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (30, 40, 3), np.uint8)
    deep = rgb.astype(np.uint16) * 200
    files = {"a.jpg": rgb, "a.png": rgb, "a.tif": rgb, "gray.png": rgb[..., 0],
             "deep.png": deep, "deep.tif": deep[..., 0]}  # fmt: skip
    for name, array in files.items():
        cv2.imwrite(str(tmp_path / name), array)
        for intensity in (None, Intensity("shift"), Intensity("range", 0, 40000)):
            want = read_image(tmp_path / name, intensity)
            np.testing.assert_array_equal(read_large_image(tmp_path / name, intensity), want)
