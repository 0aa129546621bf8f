"""ONNX: `seglab export` with its parity check, metadata, and predict.py's onnx backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from seglab.models.module import SegmentationModule
from seglab.prediction import load_predictor
from seglab.prediction.onnx import OnnxNetwork, open_onnx, write_onnx
from seglab.prediction.run import run
from tests.helpers import ROOT, compose_predict
from tests.test_predict import val_list


@pytest.fixture(scope="session")
def onnx_model(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The trained checkpoint exported as a user does it, through the console script."""
    output = tmp_path_factory.mktemp("onnx") / "model.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "seglab.cli", "export",
         f"ckpt={trained_run['metrics']['best_ckpt']}", f"output={output}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {"path": output, "stdout": done.stdout}


def test_export_checks_parity_and_stores_the_metadata(onnx_model: dict):
    stdout = onnx_model["stdout"]
    assert "dynamic batch, height and width" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.startswith(("1x3", "2x3"))]
    assert [r[0] for r in rows] == ["1x3x64x64", "2x3x96x128"]
    for _, diff, agreement in rows:
        assert float(diff) < 1e-3 and float(agreement) > 0.999
    _, info, dynamic = open_onnx(onnx_model["path"], torch.device("cpu"))
    assert dynamic and info.names == ["background", "leaf", "stone", "berry"]
    assert info.image_size == (64, 64) and info.colors[1] == (51, 221, 255)
    assert info.intensity == "auto"  # data.intensity travels too (absent, it would read "shift")


def test_onnx_sessions_do_not_busy_wait_between_runs(onnx_model: dict):
    """predict.py decodes and writes in other threads between forward passes: a spinning
    onnxruntime pool took their cores (0.86-0.88x the bare forward, against 0.91-0.93x)."""
    network, _, _ = open_onnx(onnx_model["path"], torch.device("cpu"))
    options = network.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_backend_predicts_what_torch_predicts(
    trained_run: dict, onnx_model: dict, tmp_path: Path
):
    images = val_list(trained_run["export"], tmp_path)
    common = [f"input={images}", f"labels={trained_run['export']}", "device=cpu",
              "num_workers=0", "progress=false", "mode=slide", "tta=true"]  # fmt: skip
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    by_torch = run(compose_predict([f"ckpt={trained_run['metrics']['best_ckpt']}",
                                    f"output={torch_out}", *common]))  # fmt: skip
    by_onnx = run(compose_predict(["backend=onnx", f"model={onnx_model['path']}",
                                   f"output={onnx_out}", *common]))  # fmt: skip
    assert by_onnx["images"] == by_torch["images"] == 3
    assert by_onnx["metrics"]["mIoU"] == pytest.approx(by_torch["metrics"]["mIoU"], abs=1e-3)
    for torch_png in torch_out.glob("*_index.png"):
        a = cv2.imread(str(torch_png), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(onnx_out / torch_png.name), cv2.IMREAD_UNCHANGED)
        assert (a == b).mean() > 0.999


def test_load_predictor_takes_a_checkpoint_or_an_onnx_model(trained_run: dict, onnx_model: dict):
    """The one entry point: the file's suffix picks the backend."""
    path = next((trained_run["export"] / "JPEGImages").glob("*.jpg"))
    image = cv2.imread(str(path))[..., ::-1].copy()
    by_torch = load_predictor(trained_run["metrics"]["best_ckpt"], "cpu", mode="slide")
    by_onnx = load_predictor(onnx_model["path"], "cpu", mode="slide")
    assert isinstance(by_onnx.network, OnnxNetwork)
    assert (by_onnx.predict(image) == by_torch.predict(image)).mean() > 0.999
    (probabilities,) = by_onnx.probabilities([image])
    assert probabilities.shape == (4, *image.shape[:2])
    with pytest.raises(ValueError, match="amp=true applies to checkpoints"):
        load_predictor(onnx_model["path"], "cpu", amp=True)


def test_onnx_without_seglab_metadata_is_refused(onnx_model: dict, tmp_path: Path):
    model = onnx.load(str(onnx_model["path"]))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    cfg = compose_predict(["backend=onnx", f"model={bare}", f"input={tmp_path}",
                           f"output={tmp_path / 'out'}", "device=cpu"])  # fmt: skip
    with pytest.raises(ValueError, match="no seglab metadata"):
        run(cfg)


def test_fixed_size_architectures_export_at_the_training_size(tmp_path: Path):
    """PSPNet's adaptive pooling cannot follow a dynamic size: exported fixed, and said so."""
    module = SegmentationModule(
        model={"arch": "pspnet", "encoder_name": "resnet18", "encoder_weights": None},
        loss={"name": "ce"},
        optimizer={"name": "adamw", "lr": 1e-3},
        classes=[{"name": "background", "color": [0, 0, 0]},
                 {"name": "crack", "color": [255, 0, 0]}],
        image_size=[64, 96],
    )  # fmt: skip
    ckpt = tmp_path / "pspnet.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    report = write_onnx(ckpt, tmp_path / "pspnet.onnx")
    assert not report.dynamic_size and "exported for 64x96 inputs only" in report.notes[0]
    assert [c["shape"] for c in report.checks] == [[1, 3, 64, 96], [2, 3, 64, 96]]
    image = np.zeros((30, 200, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "wide.png"), image)
    base = ["backend=onnx", f"model={tmp_path / 'pspnet.onnx'}", f"input={tmp_path / 'wide.png'}",
            f"output={tmp_path / 'out'}", "device=cpu", "num_workers=0",
            "progress=false"]  # fmt: skip
    with pytest.raises(ValueError, match="runs only on 64x96 inputs"):
        run(compose_predict([*base, "mode=whole"]))
    assert run(compose_predict([*base, "mode=slide"]))["images"] == 1
    assert cv2.imread(str(tmp_path / "out" / "wide_index.png")).shape[:2] == (30, 200)


def test_export_command_line_errors(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "seglab.cli", "export", f"ckpt={tmp_path}/x.ckpt"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "ckpt=PATH output=model.onnx" in done.stderr
    with pytest.raises(ValueError, match="ending in .onnx"):
        write_onnx(tmp_path / "x.ckpt", tmp_path / "model.bin")
