"""`seglab serve` for real: a server process on a loopback port, concurrent HTTP clients, masks
compared with predict.py's files exactly, and every bad input answered with a 4xx."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seglab.prediction import load_predictor
from seglab.prediction.onnx import write_onnx
from seglab.prediction.run import run
from seglab.serving.server import ServeConfig
from tests.helpers import ROOT, compose_predict
from tests.serving import SEGLAB, decode_png, get_json, post_image, request, running_server

MAX_PIXELS = 400_000  # the server's SEGLAB_MAX_IMAGE_PIXELS in these tests


@pytest.fixture(scope="module")
def models_folder(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as `ckpt=` takes it: the run's checkpoint and its ONNX export (same stem)."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(trained_run["metrics"]["best_ckpt"], folder / "best.ckpt")
    write_onnx(folder / "best.ckpt", folder / "best.onnx")
    return folder


@pytest.fixture(scope="module")
def images(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Test images of the export and resized copies whose size and aspect differ from the
    training size (64x64), as JPEG and PNG files, and a 16-bit PNG."""
    folder = tmp_path_factory.mktemp("inputs")
    sources = sorted((trained_run["export"] / "JPEGImages").glob("*.jpg"))[:4]
    for i, source in enumerate(sources):
        shutil.copy(source, folder / source.name)
        image = cv2.imread(str(source))
        size = [(90, 50), (70, 130), (33, 77), (64, 64)][i]
        cv2.imwrite(str(folder / f"{source.stem}_resized.png"), cv2.resize(image, size))
    # 12-bit data in a 16-bit PNG: the server maps an upload by the model's data.intensity
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 16 + 100
    cv2.imwrite(str(folder / "zz_16bit.png"), gray)
    return {p.name: p for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def server(models_folder: Path):
    options = [f"ckpt={models_folder}", "device=cpu", "max_upload_mb=0.5", "max_wait_ms=100"]
    with running_server(options, env={"SEGLAB_MAX_IMAGE_PIXELS": str(MAX_PIXELS)}) as url:
        yield url


def predict_py(trained_run: dict, images: dict[str, Path], output: Path) -> Path:
    inputs = next(iter(images.values())).parent
    cfg = compose_predict(
        [f"ckpt={trained_run['metrics']['best_ckpt']}", f"input={inputs}", f"output={output}",
         "device=cpu", "num_workers=0", "progress=false", "outputs=[index,color]"]
    )  # fmt: skip
    run(cfg)
    return output


def test_models_health_and_names(server: str, models_folder: Path):
    status, models = get_json(f"{server}/models")
    assert status == 200
    assert [m["name"] for m in models["models"]] == ["best.ckpt", "best.onnx"]  # a shared stem
    assert [m["backend"] for m in models["models"]] == ["torch", "onnx"]
    info = load_predictor(models_folder / "best.ckpt", "cpu").info
    for model in models["models"]:
        assert [(c["name"], tuple(c["color"])) for c in model["classes"]] == list(
            zip(info.names, info.colors, strict=True)
        )
    assert models["models"][0]["input_size"] == [64, 64]
    assert models["default"] == "best.ckpt"
    status, health = get_json(f"{server}/health")
    assert (
        status == 200
        and health["status"] == "ok"
        and health["models"] == ["best.ckpt", "best.onnx"]
    )


def test_concurrent_requests_return_predict_py_masks_exactly(
    server: str, trained_run: dict, images: dict[str, Path], tmp_path: Path
):
    expected = predict_py(trained_run, images, tmp_path / "predict")
    jobs = [(name, fmt) for name in images for fmt in ("index", "color", "json")] * 2
    before = get_json(f"{server}/health")[1]["batches"]

    def send(job: tuple[str, str]) -> tuple[str, str, int, bytes]:
        name, fmt = job
        status, _, body = post_image(
            server, images[name].read_bytes(), format=fmt, model="best.ckpt"
        )
        return name, fmt, status, body

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    for name, fmt, status, body in answers:
        assert status == 200, body
        stem = Path(name).stem
        truth = cv2.imread(str(expected / f"{stem}_index.png"), cv2.IMREAD_UNCHANGED)
        if fmt == "index":
            np.testing.assert_array_equal(decode_png(body), truth)
        elif fmt == "color":
            color = cv2.imread(str(expected / f"{stem}_color.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(decode_png(body), color)
        else:
            answer = json.loads(body)
            assert (answer["height"], answer["width"]) == truth.shape
            counts = np.bincount(truth.ravel(), minlength=len(answer["classes"]))
            assert [c["pixels"] for c in answer["classes"]] == counts.tolist()
            assert sum(c["share"] for c in answer["classes"]) == pytest.approx(1.0)
    health = get_json(f"{server}/health")[1]
    assert health["batches"] - before < len(jobs), "no two requests shared a forward pass"


def test_the_onnx_model_and_request_options(server: str, models_folder: Path, images: dict):
    image_path = images[sorted(images)[1]]
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    onnx = load_predictor(models_folder / "best.onnx", "cpu")
    status, headers, body = post_image(server, image_path.read_bytes(), model="best.onnx")
    assert status == 200 and headers["x-seglab-model"] == "best.onnx"
    np.testing.assert_array_equal(decode_png(body), onnx.predict(image))
    whole = load_predictor(models_folder / "best.ckpt", "cpu", mode="whole", flip=True)
    status, _, body = post_image(server, image_path.read_bytes(), mode="whole", flip="true")
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), whole.predict(image))
    # Accept: application/json picks JSON when format= is not given; masks=true adds the PNGs.
    status, headers, body = request(
        f"{server}/predict?masks=true", image_path.read_bytes(), {"Accept": "application/json"}
    )
    answer = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert {"index_png", "color_png", "classes"} <= set(answer)
    # A multipart form, as `curl -F image=@photo.jpg` sends it.
    boundary = "seglab-test-boundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image_path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, body = request(
        f"{server}/predict", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 200
    np.testing.assert_array_equal(
        decode_png(body), load_predictor(models_folder / "best.ckpt", "cpu").predict(image)
    )


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(
    server: str, images: dict[str, Path]
):
    good = images[sorted(images)[0]].read_bytes()
    jpeg = next(p for p in images.values() if p.suffix == ".jpg").read_bytes()
    octet = {"Content-Type": "application/octet-stream"}
    cases = {
        "not an image": (post_image(server, b"hello, this is text"), 400, "cannot read image"),
        "corrupt image": (post_image(server, jpeg[: len(jpeg) // 2]), 400, "truncated"),
        "empty body": (post_image(server, b""), 400, "empty body"),
        "over-size upload": (post_image(server, b"\0" * 600_000), 413, "limit"),
        "too many pixels": (post_image(server, _png(700, 700)), 413, "over the limit"),
        "unknown model": (post_image(server, good, model="nope"), 404, "not served"),
        "unknown format": (post_image(server, good, format="gif"), 400, "format="),
        "unknown mode": (post_image(server, good, mode="tiles"), 400, "mode="),
        "bad flag": (post_image(server, good, flip="maybe"), 400, "flip="),
        "form without image": (
            request(
                f"{server}/predict",
                b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
                {"Content-Type": "multipart/form-data; boundary=b"},
            ),
            400,
            "none named `image`",
        ),
        "unknown route": (request(f"{server}/nothing-here"), 404, "Not Found"),
        "wrong method": (request(f"{server}/predict", headers=octet), 405, "Method Not Allowed"),
    }
    for case, ((status, headers, body), expected, text) in cases.items():
        assert status == expected, (case, status, body)
        assert headers["content-type"] == "application/json", case
        assert text in json.loads(body)["error"], (case, body)
        assert post_image(server, good)[0] == 200, f"not served after {case}"


def test_config_defaults_bind_to_loopback_and_errors_are_one_line(tmp_path: Path):
    config = ServeConfig.from_dotlist(["ckpt=x.ckpt"])
    assert (config.host, config.port, config.max_upload_mb) == ("127.0.0.1", 8000, 32.0)
    assert config.batch_size == "auto"  # as predict.py: 1 on a CPU, 8 on a GPU
    for args, text in [
        ([], "give ckpt=PATH"),
        ([f"ckpt={tmp_path / 'missing.ckpt'}"], "no such file or folder"),
        ([f"ckpt={tmp_path}"], "holds no .ckpt or .onnx file"),
        (["ckpt=x.ckpt", "colour=red"], "unknown key(s) colour"),
        (["ckpt=x.ckpt", "port=abc"], "port='abc'"),
        (["ckpt=x.ckpt", "batch_size=many"], "batch_size='many'"),
    ]:
        done = subprocess.run([SEGLAB, "serve", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and text in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def readme_serving_block(start: str) -> list[str]:
    """The lines of the README Serving section's code block whose first line starts `start`."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Serving", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```bash\n")[1:]]
    return next(b for b in blocks if b.startswith(start)).strip().splitlines()


def test_readme_serving_commands_run_as_printed(trained_run: dict, tmp_path: Path):
    """README → Serving: the serve command with the run's checkpoint, then each curl line as
    printed, with only the port and the photo's path filled in."""
    (serve,) = [line for line in readme_serving_block("pip install") if line.startswith("seglab")]
    ckpt = trained_run["metrics"]["best_ckpt"]
    args = [re.sub(r"ckpt=\S+", f"ckpt={ckpt}", arg) for arg in shlex.split(serve)[2:]]
    image = sorted((trained_run["export"] / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(image, tmp_path / "photo.jpg")
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    expected = load_predictor(ckpt, "cpu").predict(rgb)
    with running_server([*args, "device=cpu"]) as url:
        outputs = {}
        for line in readme_serving_block("curl"):
            command = line.replace("http://127.0.0.1:8000", url)
            done = subprocess.run(
                command, shell=True, cwd=tmp_path, capture_output=True, timeout=120
            )
            assert done.returncode == 0, (line, done.stderr)
            outputs[line] = done.stdout
    np.testing.assert_array_equal(decode_png((tmp_path / "photo_index.png").read_bytes()), expected)
    colors = np.asarray(load_predictor(ckpt, "cpu").info.colors, np.uint8)
    color = decode_png((tmp_path / "photo_color.png").read_bytes())[..., ::-1]
    np.testing.assert_array_equal(color, colors[expected])
    answers = [json.loads(out) for line, out in outputs.items() if "-o " not in line]
    by_kind = {("models" in a): a for a in answers}
    assert by_kind[False]["mode"] == "whole" and by_kind[False]["flip"] is True
    assert [c["name"] for c in by_kind[True]["models"][0]["classes"]] == [
        c["name"] for c in by_kind[False]["classes"]
    ]
