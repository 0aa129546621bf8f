"""Every model config builds and predicts at 64x64; the model options do what they say."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seglab.models.factory import ModelConfigError, create_model
from seglab.models.fine_stage import auto_output_stride
from seglab.models.module import SegmentationModule
from seglab.models.optim import param_groups
from seglab.models.registry import build_model
from tests.helpers import ROOT, compose_train

# `_base.yaml` holds what every model config shares; it is not an option of its own.
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("[!_]*.yaml"))
# The smallest encoder of each family keeps the forward passes fast.
SMALL_ENCODER = {"segformer": "mit_b0", "dpt": "tu-vit_tiny_patch16_224"}
# PAN's attention pyramid halves the 1/16 feature map three times: 128 px is its minimum.
SIZE = {"pan": 128}
CLASSES = [{"name": n, "color": [i, i, i]} for i, n in enumerate(["bg", "a", "b"])]


def model_config(name: str, *overrides: str) -> dict:
    encoder = SMALL_ENCODER.get(name, "resnet18")
    cfg = compose_train(
        [f"model={name}", "model.encoder_weights=null", f"model.encoder_name={encoder}",
         "model.in_channels=3", *overrides]  # auto is resolved from the data by training.build
    )  # fmt: skip
    model = dict(cfg.model)
    if model["decoder_output_stride"] == "auto":  # resolved by training.build; here as for data
        model["decoder_output_stride"] = auto_output_stride(  # that is all outlines
            model["arch"], model["encoder_name"], outline_share=1.0
        )
    return model


def test_every_architecture_has_a_config():
    assert set(MODELS) >= {
        "unet", "unetplusplus", "fpn", "pspnet", "deeplabv3", "deeplabv3plus",
        "linknet", "manet", "pan", "upernet", "segformer", "dpt",
    }  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_model_config_builds_and_runs_a_forward_pass(name: str):
    net = build_model(model_config(name), classes=3).eval()
    size = SIZE.get(name, 64)
    with torch.no_grad():
        logits = net(torch.randn(1, 3, size, size))
    assert logits.shape == (1, 3, size, size)
    assert torch.isfinite(logits).all()


def test_freeze_encoder_leaves_only_the_decoder_to_train():
    net = create_model("unet", classes=3, encoder_name="resnet18", encoder_weights=None,
                       freeze_encoder=True)  # fmt: skip
    assert not any(p.requires_grad for p in net.encoder.parameters())
    groups = param_groups(net, lr=1e-3, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decoder", "decoder_no_decay"]
    net.train()
    assert not net.encoder.bn1.training  # frozen batch-norm statistics stay frozen


def test_param_groups_split_the_lr_and_spare_norms_and_biases_from_decay():
    net = create_model("fpn", classes=3, encoder_name="resnet18", encoder_weights=None)
    groups = {g["name"]: g for g in param_groups(net, 1e-3, 0.05, encoder_lr_mult=0.1)}
    assert groups["encoder"]["lr"] == pytest.approx(1e-4)
    assert groups["decoder"]["lr"] == pytest.approx(1e-3)
    assert (
        groups["encoder_no_decay"]["weight_decay"]
        == groups["decoder_no_decay"]["weight_decay"]
        == 0
    )
    assert groups["encoder"]["weight_decay"] == 0.05
    assert all(
        p.ndim == 1 for g in ("encoder_no_decay", "decoder_no_decay") for p in groups[g]["params"]
    )
    assert net.encoder.bn1.weight in groups["encoder_no_decay"]["params"]
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(net.parameters()))


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_module_builds_each_optimizer_with_named_groups(optimizer: str):
    cfg = compose_train([f"optimizer={optimizer}", "optimizer.encoder_lr_mult=0.5",
                         "scheduler=none", "loss.class_weights=null", "model.encoder_name=resnet18",
                         "model.encoder_weights=null", "model.in_channels=3",
                         "model.decoder_output_stride=null"])  # fmt: skip
    module = SegmentationModule(
        model=dict(cfg.model), loss=dict(cfg.loss), optimizer=dict(cfg.optimizer),
        scheduler=dict(cfg.scheduler), classes=CLASSES,
    )  # fmt: skip
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)  # all that it reads
    (opt,), schedulers = module.configure_optimizers()
    assert type(opt).__name__.lower() == optimizer and schedulers == []
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["encoder"] == pytest.approx(0.5 * lrs["decoder"])
    if optimizer == "sgd":
        assert opt.defaults["momentum"] == 0.9


def test_channels_last_and_compile_keep_the_state_dict_names(tmp_path: Path):
    plain = create_model("unet", classes=3, encoder_name="resnet18", encoder_weights=None)
    fast = create_model("unet", classes=3, encoder_name="resnet18", encoder_weights=None,
                        channels_last=True, compile=True)  # fmt: skip
    assert fast.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_channels_last_auto_follows_cuda(monkeypatch: pytest.MonkeyPatch):
    from seglab.errors import ConfigError
    from seglab.models.factory import use_channels_last

    assert use_channels_last(True) and not use_channels_last(False) and not use_channels_last(None)
    for available in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        assert use_channels_last("auto") is available
        model = create_model("unet", classes=3, encoder_name="resnet18", encoder_weights=None,
                             channels_last="auto")  # fmt: skip
        weight = model.encoder.conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) is available
    with pytest.raises(ConfigError, match="model.channels_last='yes': give true, false or auto"):
        use_channels_last("yes")


def test_pan_refuses_inputs_below_its_minimum_before_training():
    with pytest.raises(ModelConfigError, match=r"at least 128x128 but data.image_size=\[64, 64\]"):
        SegmentationModule(
            model=model_config("pan"), loss={"name": "ce"},
            optimizer={"name": "adamw", "lr": 1e-3}, classes=CLASSES, image_size=[64, 64],
        )  # fmt: skip


def test_wrong_names_list_the_choices():
    with pytest.raises(ModelConfigError, match="choose one of .*'upernet'"):
        create_model("upernett", classes=2, encoder_weights=None)
    with pytest.raises(ModelConfigError, match="timm has no model 'vit_huge_nonsense'"):
        create_model("dpt", classes=2, encoder_name="tu-vit_huge_nonsense", encoder_weights=None)


def test_batches_are_normalised_on_the_device_and_float_images_refused():
    module = SegmentationModule(
        model=model_config("unet"), loss={"name": "ce"},
        optimizer={"name": "adamw", "lr": 1e-3}, classes=CLASSES,
        image_size=[64, 64], mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0],
    )  # fmt: skip
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    masks = torch.randint(0, 3, (2, 8, 8), dtype=torch.uint8)
    batch = module.on_after_batch_transfer({"image": images, "mask": masks}, 0)
    expected = (images.float() / 255 - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / (
        torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(batch["image"], expected)
    assert batch["mask"].dtype == torch.int64 and torch.equal(batch["mask"], masks.long())
    with pytest.raises(TypeError, match="remove Normalize / ToFloat"):
        module.on_after_batch_transfer({"image": expected, "mask": masks}, 0)
    assert "pixel_mean" not in module.state_dict()  # checkpoints hold the network only
