"""Preprocessing is defined once: a validation batch and predict.py hand the network identical
tensors for the same image, and the Predictor alone decides what the network sees."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import seglab.prediction.run as run_module
from seglab.checkpoints import read_checkpoint
from seglab.demo import write_demo_export
from seglab.models.module import SegmentationModule
from seglab.prediction import Prepared, load_checkpoint, load_predictor
from seglab.preprocessing import denormalise, images_to_batch, normalise, pixel_statistics
from tests.helpers import TINY, compose_predict, compose_train

CPU = torch.device("cpu")


class Recorder(torch.nn.Module):
    """The network, recording every input it is given."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_validation_and_predict_py_give_the_network_identical_tensors(
    trained_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Images of 96 px against the checkpoint's 64: the eval resize and the normalisation
    both matter. Validation: the datamodule's val loader, then the module's batch transfer and
    forward; prediction: predict.py's run, decoding and resizing in a loader worker."""
    ckpt = trained_run["metrics"]["best_ckpt"]
    export = write_demo_export(tmp_path / "data", size=96, seed=5, splits={"train": 2, "val": 3})
    datamodule = instantiate(compose_train([*TINY, f"data.path={export}"]).data, _recursive_=False)
    _, info = load_checkpoint(ckpt, CPU)
    hparams = read_checkpoint(ckpt)["hyper_parameters"]  # validation runs the training module
    hparams["model"] = {**hparams["model"], "encoder_weights": None}
    module = SegmentationModule(**hparams)
    assert datamodule.image_size == info.image_size == (64, 64)
    assert datamodule.mean == info.mean and datamodule.std == info.std

    module.net = Recorder(module.net)
    with torch.inference_mode():
        for batch in datamodule.val_dataloader():
            module(module.on_after_batch_transfer(batch, 0)["image"])
    validation = torch.cat(module.net.inputs)
    assert validation.shape == (3, 3, 64, 64) and validation.dtype == torch.float32

    listed = tmp_path / "val.txt"  # the validation images, in the val loader's order
    listed.write_text("".join(f"{s.image}\n" for s in datamodule.export.split("val")))
    recorders: list[Recorder] = []
    build_predictor = run_module.build_predictor

    def recording(cfg):
        predictor = build_predictor(cfg)
        predictor.network.net = Recorder(predictor.network.net)
        recorders.append(predictor.network.net)
        return predictor

    monkeypatch.setattr(run_module, "build_predictor", recording)
    summary = run_module.run(
        compose_predict([f"ckpt={ckpt}", f"input={listed}", f"output={tmp_path / 'out'}",
                         "device=cpu", "num_workers=1", "batch_size=2", "progress=false",
                         "outputs=[index]"])
    )  # fmt: skip
    assert summary["images"] == 3
    predicted = torch.cat(recorders[0].inputs)
    assert torch.equal(predicted, validation)


def test_prepared_images_and_raw_images_predict_the_same(trained_run: dict):
    """What a loader worker prepares is what the Predictor would do itself; it pickles."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (77, 101, 3), np.uint8)
    for mode in ("resize", "whole"):
        predictor = load_predictor(trained_run["metrics"]["best_ckpt"], "cpu", mode=mode)
        preparer = pickle.loads(pickle.dumps(predictor.preparer))
        prepared = preparer(image)
        assert isinstance(prepared, Prepared)
        if mode == "resize":
            assert prepared.network_input.shape == (64, 64, 3)
        else:
            assert prepared.network_input is None
        (raw,) = predictor.logits([image])
        (ahead,) = predictor.logits([prepared])
        assert raw.shape == (4, 77, 101) and torch.equal(raw, ahead)
        (probabilities,) = predictor.probabilities([image])
        torch.testing.assert_close(probabilities.sum(0), torch.ones(77, 101))
        np.testing.assert_array_equal(predictor.predict(image), raw.argmax(0).numpy())
    with pytest.raises(ValueError, match=r"RGB uint8 images of shape \(height, width, 3\)"):
        predictor.predict(image[..., 0])


def test_normalise_and_denormalise_are_inverse():
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 8, 9), np.uint8))
    mean, std = pixel_statistics((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    normalised = normalise(images, mean, std)
    assert normalised.dtype == torch.float32 and abs(float(normalised.mean())) < 1.0
    assert torch.equal(denormalise(normalised, mean, std), images)
    with pytest.raises(TypeError, match="uint8"):
        normalise(images.float(), mean, std)
    with pytest.raises(ValueError, match="data.std"):
        pixel_statistics((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))


def test_class_map_is_argmax_over_classes_in_either_layout():
    """The fast CPU argmax gives torch's `argmax(dim=0)` exactly, ties (first maximum) included."""
    from seglab.preprocessing import class_map

    generator = torch.Generator().manual_seed(0)
    tied = torch.randint(0, 3, (5, 37, 23), generator=generator).float()  # many equal maxima
    for logits in (tied, torch.randn(59, 20, 30, generator=generator), torch.zeros(4, 8, 8)):
        expected = logits.argmax(dim=0)
        assert torch.equal(class_map(logits), expected)
        channels_last = logits.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        assert torch.equal(class_map(channels_last), expected)


@pytest.mark.parametrize("count", [1, 3])
def test_a_batch_of_images_is_densely_strided_channels_last(count: int):
    """The batch the network gets is a dense channels-last tensor: one image's batch axis with
    numpy's stride of 0 made oneDNN's convolutions take a slower path (0.83x on a CPU)."""
    images = [np.full((48, 64, 3), i, np.uint8) for i in range(count)]
    batch = normalise(images_to_batch(images, CPU), *pixel_statistics([0.5] * 3, [0.25] * 3, CPU))
    assert batch.shape == (count, 3, 48, 64)
    assert batch.stride() == (48 * 64 * 3, 1, 64 * 3, 3)
    assert batch.is_contiguous(memory_format=torch.channels_last)
