"""The README's train.py commands mean what they say: each is composed exactly as printed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_train

README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_train_commands() -> list[str]:
    """Every `python train.py ...` in a code block or a table cell, comments stripped."""
    commands = set()
    for line in README.splitlines():
        for match in re.finditer(r"python train\.py[^`|#\n]*", line):
            commands.add(match.group(0).strip())
    return sorted(commands)


def arguments(command: str) -> list[str]:
    """The command's overrides; the README's placeholders `[overrides]` and `<date>` aside."""
    args = [arg for arg in shlex.split(command)[2:] if arg != "[overrides]"]
    return [re.sub(r"<[^>]*>", "x", arg) for arg in args]


def test_readme_has_the_commands_this_file_checks():
    commands = readme_train_commands()
    assert "python train.py" in commands
    assert "python train.py data.path=/path/to/export" in commands


@pytest.mark.parametrize("command", readme_train_commands())
def test_every_readme_train_command_composes(command: str, tmp_path: Path):
    args = arguments(command)
    if "-m" in args or any(arg.startswith(("hparams_search=", "--cfg")) for arg in args):
        pytest.skip("a sweep or a flag: composed by the sweep tests")
    cfg = compose_train([*args, f"run_dir={tmp_path}"])
    assert cfg.data.path


def test_bare_train_py_is_the_demo():
    cfg = compose_train(arguments("python train.py"))
    assert cfg.data.demo is True and cfg.data.path == "data/demo"
    assert list(cfg.data.image_size) == [128, 128]
    assert cfg.model.encoder_weights is None
    assert cfg.trainer.max_epochs == 12


def test_data_path_trains_that_export_with_the_full_defaults():
    """README step 3: the user's export, never the demo's size, weights or schedule."""
    cfg = compose_train(arguments("python train.py data.path=/path/to/export"))
    assert cfg.data.path == "/path/to/export" and cfg.data.demo is False
    assert cfg.model.encoder_weights == "imagenet"
    assert cfg.trainer.max_epochs == 40
    assert cfg.data.image_size == "auto"  # derived from the export (test_native_resolution)
    explicit = compose_train(["data=cvat", "data.path=/path/to/export"])
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(explicit)


def test_other_overrides_alone_still_run_the_demo():
    cfg = compose_train(arguments("python train.py model=segformer loss=focal_dice"))
    assert cfg.data.demo is True and cfg.model.arch == "segformer"


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={cwd}/run"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_mistyped_data_path_is_an_error_and_nothing_is_written(tmp_path: Path):
    missing = tmp_path / "no" / "such" / "export"
    result = run_train([f"data.path={missing}"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_bad_value_is_named_before_any_data_is_read(tmp_path: Path):
    result = run_train(["data.path=/no/such/export", "optimizer.lr=abc"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "optimizer.lr" in result.stderr and "'abc'" in result.stderr
    assert "Traceback" not in result.stderr and "/no/such/export" not in result.stderr


def test_readme_python_prediction_example_runs(trained_run: dict, tmp_path: Path):
    """The Development section's snippet, run as printed with a real checkpoint and image
    files, one of them 16-bit."""
    block = README.split("Predicting from Python", 1)[1].split("```python\n", 1)[1].split("```")[0]
    code = block.replace('"best.ckpt"', repr(str(trained_run["metrics"]["best_ckpt"])))
    paths = [tmp_path / "a.png", tmp_path / "b.tif"]
    cv2.imwrite(str(paths[0]), np.full((50, 70, 3), 90, np.uint8))
    cv2.imwrite(str(paths[1]), np.arange(64 * 40, dtype=np.uint16).reshape(64, 40))
    scope: dict = {"paths": paths}
    exec(compile(code, "README.md", "exec"), scope)
    assert [m.shape for m in scope["masks"]] == [(50, 70), (64, 40)]
    assert [tuple(p.shape) for p in scope["probs"]] == [(4, 50, 70), (4, 64, 40)]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["predict.py", "ckpt=/no/such.ckpt", "input=/tmp"], "ckpt=/no/such.ckpt: no such"),
        (["predict.py", "ckpt=RANDOM", "input=/tmp"], "not a seglab checkpoint"),
        (["-m", "seglab.cli", "export", "ckpt=RANDOM", "output=m.onnx"], "not a seglab checkpoint"),
        (["-m", "seglab.cli", "inspect", "/no/such/export"], "/no/such/export"),
    ],
)
def test_user_errors_are_one_line_without_a_traceback(command, expected, tmp_path: Path):
    """predict.py and the seglab commands, as typed: `error: ...` on stderr, exit status 2."""
    random_file = tmp_path / "random.ckpt"
    random_file.write_bytes(np.random.default_rng(0).bytes(4096))
    args = [arg.replace("RANDOM", str(random_file)) for arg in command]
    if args[0] == "predict.py":
        args = [str(ROOT / "predict.py"), *args[1:], f"hydra.run.dir={tmp_path}/run"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: " in done.stderr and expected in done.stderr
    assert "Traceback" not in done.stderr
    assert "weights_only=False" not in done.stderr  # never advise unpickling
