"""model.encoder_weights=/path/to/file: pretrained encoders on machines without internet."""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from seglab.errors import ConfigError
from seglab.models.factory import create_model
from seglab.training import run
from tests.helpers import TINY, compose_train


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """Stands in for an encoder with pretrained weights: random, but not the model's own."""
    torch.manual_seed(123)
    return smp.Unet("resnet18", encoder_weights=None, classes=2).encoder


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_local_encoder_file_is_loaded(reference: torch.nn.Module, tmp_path: Path, suffix: str):
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    model = create_model("unet", classes=3, encoder_name="resnet18", encoder_weights=str(path))
    assert same_weights(model.encoder, reference)


def test_whole_models_and_classifier_heads_are_accepted(reference, tmp_path: Path):
    whole = {f"encoder.{k}": v for k, v in reference.state_dict().items()}
    whole["decoder.x.weight"] = torch.zeros(1)
    torch.save({"state_dict": whole}, tmp_path / "smp.pth")
    model = create_model(
        "fpn", 2, encoder_name="resnet18", encoder_weights=str(tmp_path / "smp.pth")
    )
    assert same_weights(model.encoder, reference)
    classifier = {
        **reference.state_dict(),
        "fc.weight": torch.zeros(1000, 512),
        "fc.bias": torch.zeros(1000),
    }
    torch.save(classifier, tmp_path / "torchvision.pth")
    model = create_model(
        "unet", 2, encoder_name="resnet18", encoder_weights=str(tmp_path / "torchvision.pth")
    )
    assert same_weights(model.encoder, reference)


def test_a_file_that_does_not_fit_names_the_keys(reference, tmp_path: Path):
    state = reference.state_dict()
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        ConfigError,
        match=r"missing keys \(1\): layer4.1.bn2.weight.*unexpected keys \(1\): extra.weight",
    ):
        create_model("unet", 2, encoder_name="resnet18", encoder_weights=str(tmp_path / "bad.pth"))
    state = reference.state_dict()
    state["conv1.weight"] = state["conv1.weight"][:, :2]  # 2 input channels: no rule adapts it
    torch.save(state, tmp_path / "two.pth")
    with pytest.raises(ConfigError, match=r"wrong shapes \(1\): conv1.weight \(64, 2, 7, 7\)"):
        create_model(
            "unet", 2, encoder_name="resnet18", in_channels=1,
            encoder_weights=str(tmp_path / "two.pth"),
        )  # fmt: skip


def test_missing_and_unreadable_files_are_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        create_model("unet", 2, encoder_name="resnet18", encoder_weights=str(tmp_path / "no.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable state dict"):
        create_model("unet", 2, encoder_name="resnet18", encoder_weights=str(tmp_path / "junk.pth"))


def test_train_py_starts_from_the_file(reference, tiny_export: Path, tmp_path: Path):
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    overrides = [o for o in TINY if not o.startswith("model.encoder_weights")]
    cfg = compose_train([*overrides, f"data.path={tiny_export}", f"run_dir={tmp_path / 'run'}",
                         f"model.encoder_weights={path}", "trainer.max_epochs=1", "logger=none",
                         "test=false"])  # fmt: skip
    metrics = run(cfg)
    assert metrics["best_ckpt"]
