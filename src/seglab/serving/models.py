"""The models a server holds: each checkpoint or ONNX file loaded once, by name.

`ckpt=` names a checkpoint or a folder of them (every .ckpt and .onnx file directly inside);
`model=` names an .onnx file. A model is known by its file name without the suffix, or with it
where two files share a stem (best.ckpt and best.onnx). Every model is loaded through
`seglab.prediction.load_predictor`, the one loader predict.py uses, so the server sees exactly
what predict.py sees; a request may ask for another mode or flip TTA, which reuses the loaded
network under a Predictor with those options.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.errors import ConfigError, MissingFileError
from seglab.prediction import MODES, Predictor, load_predictor
from seglab.prediction.predictor import AUTO_MODE

MODEL_SUFFIXES = (".ckpt", ".onnx")


@dataclass(frozen=True)
class PredictOptions:
    """What a request may choose; the server's command line gives the defaults."""

    mode: str = AUTO_MODE
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in (AUTO_MODE, *MODES):
            raise ConfigError(f"mode={self.mode!r}: choose one of {[AUTO_MODE, *MODES]}")


@dataclass
class ServedModel:
    name: str
    path: Path
    predictor: Predictor  # built with the server's default options
    _variants: dict[PredictOptions, Predictor] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "onnx" if self.path.suffix.lower() == ".onnx" else "torch"

    @property
    def defaults(self) -> PredictOptions:
        return PredictOptions(self.predictor.mode, self.predictor.flip)

    def with_options(self, options: PredictOptions) -> Predictor:
        """The Predictor for a request's options, sharing the loaded network."""
        if options == self.defaults:
            return self.predictor
        if options not in self._variants:
            base = self.predictor
            self._variants[options] = Predictor(
                base.network,
                base.info,
                base.device,
                mode=options.mode,
                overlap=base.overlap,
                flip=options.flip,
                scales=base.scales,
                batch_size=base.batch_size,
                autocast_dtype=base.autocast_dtype,
            )
        return self._variants[options]

    def describe(self) -> dict[str, Any]:
        """What `GET /models` says of this model."""
        info = self.predictor.info
        return {
            "name": self.name,
            "file": self.path.name,
            "backend": self.backend,
            "arch": info.arch,
            "classes": [
                {"index": i, "name": c["name"], "color": list(c["color"])}
                for i, c in enumerate(info.classes)
            ],
            "input_size": list(info.image_size),
            "in_channels": info.in_channels,  # what each uploaded image must have
            "mean": list(info.mean),
            "std": list(info.std),
            "seglab_version": info.seglab_version,
            "defaults": {"mode": self.predictor.mode, "flip": self.predictor.flip},
        }


def model_files(ckpt: str | None, onnx_model: str | None) -> list[Path]:
    """The files `ckpt=` (a file or a folder) and `model=` (an .onnx file) name."""
    files: list[Path] = []
    if ckpt:
        path = Path(ckpt)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix.lower() in MODEL_SUFFIXES and p.is_file()
            )
            if not found:
                raise MissingFileError(
                    f"ckpt={path}: the folder holds no .ckpt or .onnx file; give a checkpoint "
                    "written by train.py (e.g. outputs/train/.../checkpoints/best.ckpt) or its "
                    "folder"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise MissingFileError(f"ckpt={path}: no such file or folder")
    if onnx_model:
        path = Path(onnx_model)
        if not path.is_file():
            raise MissingFileError(f"model={path}: no such file (an .onnx file from seglab export)")
        if path.suffix.lower() != ".onnx":
            raise ConfigError(f"model={path}: give an .onnx file; a checkpoint goes in ckpt=")
        files.append(path)
    if not files:
        raise ConfigError("give ckpt=PATH (a checkpoint or a folder of them) or model=MODEL.onnx")
    return files


def model_names(files: list[Path]) -> list[str]:
    """File stems, or whole file names where two files share a stem."""
    stems = Counter(p.stem for p in files)
    names = [p.stem if stems[p.stem] == 1 else p.name for p in files]
    if len(set(names)) != len(names):
        duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
        raise ConfigError(f"two models would be served as {duplicates}: rename one of the files")
    return names


def load_models(
    ckpt: str | None,
    onnx_model: str | None,
    device: str = "auto",
    amp: bool = False,
    **options: Any,
) -> dict[str, ServedModel]:
    """name -> ServedModel for every file named; `options` are the Predictor's defaults."""
    files = model_files(ckpt, onnx_model)
    models = {}
    for name, path in zip(model_names(files), files, strict=True):
        is_onnx = path.suffix.lower() == ".onnx"
        predictor = load_predictor(path, device, amp=amp and not is_onnx, **options)
        models[name] = ServedModel(name, path, predictor)
    return models
