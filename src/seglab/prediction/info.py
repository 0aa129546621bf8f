"""ModelInfo: everything prediction needs besides the weights.

A checkpoint's hyper-parameters and an ONNX model's metadata both carry it, so the two backends
share the classes, colours, training size and normalisation, and so the same preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from seglab.data.intensity import LEGACY, Intensity
from seglab.data.labelmap import SegClass


@dataclass(frozen=True)
class ModelInfo:
    classes: list[dict[str, Any]]  # {"name", "color"} in class-index order
    image_size: tuple[int, int]  # the training input size, [height, width]
    mean: tuple[float, ...]  # data.mean, in [0, 1] units (see seglab.preprocessing)
    std: tuple[float, ...]
    ignore_index: int = 255
    seglab_version: str = "unknown"
    arch: str = "unknown"
    # data.intensity as stored (`seglab.data.intensity`); files written before it existed
    # read 16-bit images as seglab did then (LEGACY)
    intensity: str | dict[str, list[float]] = LEGACY
    # model.in_channels: the channels every input image must have (`seglab.data.channels`);
    # files written before it was stored all took 3
    in_channels: int = 3
    # data.sampling: `tile` models were trained on windows of image_size at native resolution,
    # and predict by sliding it (`Predictor`'s mode `auto`); files without it: `resize`
    sampling: str = "resize"
    # data.upscale: whether `resize` mode enlarges images smaller than image_size to fit it
    # (`seglab.preprocessing.fit_size`); files written before it existed all did
    upscale: bool = True

    @property
    def reader(self) -> Intensity:
        """The rule that maps this model's >8-bit input images to uint8, as in training."""
        return Intensity.parse(self.intensity, "intensity")

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [tuple(c["color"]) for c in self.classes]

    @property
    def seg_classes(self) -> list[SegClass]:
        return [SegClass(c["name"], tuple(c["color"])) for c in self.classes]

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> ModelInfo:
        """From a checkpoint's `hyper_parameters` (the SegmentationModule's arguments)."""
        return cls(
            classes=[{"name": c["name"], "color": list(c["color"])} for c in hparams["classes"]],
            image_size=tuple(int(v) for v in hparams["image_size"]),
            mean=tuple(float(v) for v in hparams["mean"]),
            std=tuple(float(v) for v in hparams["std"]),
            ignore_index=int(hparams.get("ignore_index", 255)),
            seglab_version=str(hparams.get("seglab_version", "unknown")),
            arch=str(hparams["model"].get("arch", "unknown")),
            intensity=Intensity.parse(hparams.get("intensity", LEGACY), "intensity").to_config(),
            in_channels=int(hparams["model"].get("in_channels", 3)),
            sampling=str(hparams.get("sampling", "resize")),
            upscale=bool(hparams.get("upscale", True)),
        )

    def to_json(self) -> str:
        """The ONNX metadata form; `from_json` reads it back."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        data["image_size"] = tuple(data["image_size"])
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        info = cls(**data)
        info.reader  # noqa: B018  (a bad rule fails here, naming the key, not at the first image)
        return info
