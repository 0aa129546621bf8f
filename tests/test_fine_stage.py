"""`model.decoder_output_stride=2`: the stride-2 stage after a 1/4-scale decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.errors import ConfigError
from seglab.models.factory import create_model
from seglab.models.module import SegmentationModule
from seglab.models.registry import build_model
from seglab.prediction import load_predictor
from seglab.prediction.onnx import write_onnx

CLASSES = [{"name": "background", "color": [0, 0, 0]}, {"name": "cell", "color": [255, 0, 0]}]


def fpn(**options) -> torch.nn.Module:
    return create_model("fpn", 3, encoder_name="resnet18", encoder_weights=None, **options)


def test_the_stage_predicts_at_full_size_from_stride_two_features():
    coarse, fine = fpn(), fpn(decoder_output_stride=2)
    x = torch.randn(2, 3, 64, 96)
    assert fine.eval()(x).shape == coarse.eval()(x).shape == (2, 3, 64, 96)
    head = fine.segmentation_head
    assert head[1].scale_factor == 2 and head[0].in_channels == fine.decoder.out_channels
    keys = set(fine.state_dict())
    assert any(k.startswith("decoder.merge.") for k in keys)
    assert {k.replace("decoder.decoder.", "decoder.") for k in keys if "merge" not in k} - {
        k for k in coarse.state_dict() if not k.startswith("segmentation_head")
    } == {"segmentation_head.0.weight", "segmentation_head.0.bias"}
    assert fpn(decoder_output_stride=4).segmentation_head[1].scale_factor == 4


def test_options_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match=r"model.decoder_output_stride=3: give 2"):
        fpn(decoder_output_stride=3)
    with pytest.raises(ConfigError, match=r"model.arch=unet predicts at 1/1 scale"):
        create_model("unet", 2, encoder_name="resnet18", encoder_weights=None,
                     decoder_output_stride=2)  # fmt: skip
    assert build_model(
        {"arch": "deeplabv3plus", "encoder_name": "resnet18", "encoder_weights": None,
         "decoder_output_stride": 2}, classes=2,
    ).segmentation_head[1].scale_factor == 2  # fmt: skip


def test_checkpoint_predictor_and_onnx_rebuild_the_stage(tmp_path: Path):
    """The option travels in the checkpoint's hyper-parameters: predict.py and the ONNX export
    rebuild the same network from the file alone, and both give its scores."""
    module = SegmentationModule(
        model={"arch": "fpn", "encoder_name": "resnet18", "encoder_weights": None,
               "decoder_output_stride": 2},
        loss={"name": "ce"}, optimizer={"name": "adamw", "lr": 1e-3},
        classes=CLASSES, image_size=[64, 64],
    )  # fmt: skip
    ckpt = tmp_path / "fine.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)
    torch_logits = load_predictor(ckpt, mode="whole", device="cpu").logits([image])[0]
    assert torch_logits.shape == (2, 50, 70)
    report = write_onnx(ckpt, tmp_path / "fine.onnx")
    assert report.dynamic_size
    onnx_logits = load_predictor(tmp_path / "fine.onnx", mode="whole").logits([image])[0]
    assert torch.allclose(torch_logits, onnx_logits, atol=1e-3)
