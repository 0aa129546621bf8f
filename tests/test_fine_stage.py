"""`model.decoder_output_stride`: the stride-2 (and full-resolution) stages after a 1/4-scale
decoder, and `auto`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seglab.config import validate
from seglab.data.scan import outline_pixels
from seglab.errors import ConfigError
from seglab.models.factory import create_model
from seglab.models.fine_stage import OUTLINE_SHARE_FOR_FINE_STAGES, auto_output_stride
from seglab.models.module import SegmentationModule
from seglab.models.registry import build_model
from seglab.prediction import load_predictor
from seglab.prediction.onnx import write_onnx
from seglab.training import build
from tests.helpers import TINY, compose_train

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


def test_stride_one_merges_the_image_itself_at_full_resolution():
    """Stride 1 = the stride-2 stage, then one more merge with the input image at its own
    pixels: the class scores need no upsampling at all."""
    fine = fpn(decoder_output_stride=1, decoder_segmentation_channels=64)
    x = torch.randn(2, 3, 64, 96)
    assert fine.eval()(x).shape == (2, 3, 64, 96)
    assert isinstance(fine.segmentation_head[1], torch.nn.Identity)
    assert fine.decoder.merge_full[0].in_channels == 32 + 3  # the stride-2 stage + the image
    keys = set(fine.state_dict())
    assert keys > {k for k in fpn(decoder_output_stride=2, decoder_segmentation_channels=64)
                   .state_dict() if not k.startswith("segmentation_head")}  # fmt: skip
    assert any(k.startswith("decoder.merge_full.") for k in keys)


def test_options_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match=r"model.decoder_output_stride=3: give 1 or 2"):
        fpn(decoder_output_stride=3)
    with pytest.raises(ConfigError, match=r"model.arch=unet predicts at 1/1 scale"):
        create_model("unet", 2, encoder_name="resnet18", encoder_weights=None,
                     decoder_output_stride=2)  # fmt: skip
    assert build_model(
        {"arch": "deeplabv3plus", "encoder_name": "resnet18", "encoder_weights": None,
         "decoder_output_stride": 2}, classes=2,
    ).segmentation_head[1].scale_factor == 2  # fmt: skip


@pytest.mark.parametrize("stride", [2, 1])
def test_checkpoint_predictor_and_onnx_rebuild_the_stage(tmp_path: Path, stride: int):
    """The option travels in the checkpoint's hyper-parameters: predict.py and the ONNX export
    rebuild the same network from the file alone, and both give its scores."""
    module = SegmentationModule(
        model={"arch": "fpn", "encoder_name": "resnet18", "encoder_weights": None,
               "decoder_output_stride": stride},
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


def test_outline_pixels_count_labelled_pixels_within_two_pixels_of_another_class():
    mask = np.zeros((10, 10), np.uint8)
    mask[3:7, 3:7] = 1  # a 4x4 square: every pixel of it, and a ring 2 wide around it
    assert outline_pixels(mask, num_classes=2) == 8 * 8
    mask[:, 0] = 255  # ignored pixels are never counted, and do not make outlines of their own
    assert outline_pixels(mask, num_classes=2) == 8 * 8
    assert outline_pixels(np.ones((10, 10), np.uint16), num_classes=2) == 0


def test_auto_adds_the_stage_only_where_outlines_are_much_of_the_data():
    share = OUTLINE_SHARE_FOR_FINE_STAGES
    assert auto_output_stride("fpn", "resnet18", share) == 1
    assert auto_output_stride("FPN", "resnet18", 0.14) == 1
    assert auto_output_stride("fpn", "resnet18", share * 0.99) is None
    assert auto_output_stride("fpn", "resnet18", None) is None  # nothing labelled
    assert auto_output_stride("unet", "resnet18", 0.5) is None  # draws at full size already
    assert auto_output_stride("fpn", "mit_b0", 0.5) is None  # no stride-2 features to merge
    assert auto_output_stride("fpn", "tu-resnet18", 0.5) is None  # unknown until built


def test_train_resolves_auto_from_the_export_and_stores_the_outcome(
    tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """The scan measures the export's outline share; the checkpoint gets a number or null,
    never `auto`, and the printed line says why. The share is measured as training sees the
    images: shrinking them 2x makes their outlines twice as dense."""
    cfg = compose_train([*TINY, f"data.path={tiny_export}", f"run_dir={tmp_path}"])
    assert cfg.model.decoder_output_stride == "auto"
    experiment = build(cfg)
    share = experiment.datamodule.outline_share
    report = experiment.datamodule.scan_report
    assert share == pytest.approx(report.outline["train"] / report.pixels["train"].sum())
    expected = 1 if share >= OUTLINE_SHARE_FOR_FINE_STAGES else None
    assert experiment.module.hparams["model"]["decoder_output_stride"] == expected
    assert f"model.decoder_output_stride=auto -> {expected} ({share:.1%}" in capsys.readouterr().out
    small = [o.replace("[64,64]", "[32,32]") for o in TINY]
    halved = compose_train([*small, f"data.path={tiny_export}", f"run_dir={tmp_path / 'h'}"])
    assert build(halved).datamodule.outline_share == pytest.approx(min(1.0, 2 * share))
    fixed = compose_train([*TINY, f"data.path={tiny_export}", f"run_dir={tmp_path / 'f'}",
                           "model.decoder_output_stride=null"])  # fmt: skip
    assert build(fixed).module.hparams["model"]["decoder_output_stride"] is None


def test_a_wrong_value_is_refused_before_data_is_read():
    cfg = compose_train([*TINY, "data.path=/nonexistent", "model.decoder_output_stride=3"])
    with pytest.raises(ConfigError, match=r"decoder_output_stride: expected auto, null, 1, 2 or 4"):
        validate(cfg)


def test_outline_pixels_are_the_same_counted_in_strips():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (37, 23), np.uint8).repeat(3, axis=0).repeat(3, axis=1)
    mask[rng.random(mask.shape) < 0.05] = 255
    whole = outline_pixels(mask, num_classes=3, rows=mask.shape[0])
    assert 0 < whole < np.count_nonzero(mask < 3)
    assert all(outline_pixels(mask, num_classes=3, rows=r) == whole for r in (1, 2, 5, 16))
