"""A checkpoint as an ONNX model (`seglab export`), checked against PyTorch as it is written,
and the onnxruntime backend of the Predictor, which reuses every pre- and post-processing step
of the torch backend: the classes, colours, normalisation and input size travel in the ONNX
model's metadata (a ModelInfo).

The graph maps a normalised float32 image batch `image` (N, in_channels, H, W) to `logits`
(N, C, H, W), with N, H and W dynamic (H and W multiples of 32). Architectures whose pooling
cannot follow a dynamic size (PSPNet and UPerNet's adaptive pooling) are written for the
training size only, and the metadata says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.atomic import atomic_path, remove_stale
from seglab.console import say
from seglab.errors import ConfigError, MissingExtraError, MissingFileError
from seglab.prediction.checkpoint import load_checkpoint
from seglab.prediction.geometry import SIZE_MULTIPLE
from seglab.prediction.info import ModelInfo
from seglab.prediction.load import resolve_device
from seglab.prediction.predictor import Predictor

OPSET = 18  # ONNX opset of the graph; onnxruntime >= 1.14 runs it
METADATA_KEY = "seglab"
INSTALL_HINT = (
    'ONNX needs extra packages: pip install "seglab[onnx]" (onnx, onnxscript, onnxruntime)'
)


@dataclass
class OnnxReport:
    """What `write_onnx` wrote: whether the size is dynamic, the parity checks, notes."""

    path: Path
    opset: int
    dynamic_size: bool
    checks: list[dict[str, Any]] = field(default_factory=list)  # one per input shape tried
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = ["input shape        max |logit diff|   argmax agreement"]
        for c in self.checks:
            shape = "x".join(map(str, c["shape"]))
            rows.append(f"{shape:<18} {c['max_abs_diff']:>16.2e}   {c['argmax_agreement']:>15.6f}")
        return "\n".join(rows)


class ParityError(RuntimeError):
    """onnxruntime's logits differ from PyTorch's beyond the tolerance."""


def write_onnx(
    ckpt: str | Path, output: str | Path, opset: int = OPSET, tolerance: float = 1e-3
) -> OnnxReport:
    """Write `ckpt` as the ONNX model `output`, then compare onnxruntime with PyTorch on
    random inputs.

    The check fails (ParityError) when the largest logit difference exceeds `tolerance` times
    max(1, the largest |logit|). The model is written and checked under a partial name beside
    `output` and replaces it only once checked: a failed check or a killed run leaves an
    earlier `output` as it was.
    """
    _require_onnx()
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"output={output}: give a file name ending in .onnx")
    if output.is_dir():
        raise IsADirectoryError(f"output={output} is a folder; give a file name ending in .onnx")
    module, info = load_checkpoint(ckpt, torch.device("cpu"))
    network = module.net.to(memory_format=torch.contiguous_format).eval()
    height, width = info.image_size
    channels = info.in_channels
    other_size = (height + SIZE_MULTIPLE, width + 2 * SIZE_MULTIPLE)

    report = OnnxReport(output, opset, dynamic_size=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(output.parent)
    with atomic_path(output) as partial:
        _write_graph(network, info, partial, opset, dynamic_size=True)
        try:
            report.checks = _parity(
                network,
                partial,
                [(1, channels, height, width), (2, channels, *other_size)],
                tolerance,
                output,
            )
        except Exception as err:  # runtime shape errors and mismatches alike
            report.notes.append(
                f"{info.arch}: the graph does not run at other input sizes ({_first_line(err)}); "
                f"exported for {height}x{width} inputs only (predict with mode=resize or slide)"
            )
            report.dynamic_size = False
            _write_graph(network, info, partial, opset, dynamic_size=False)
            report.checks = _parity(
                network,
                partial,
                [(1, channels, height, width), (2, channels, height, width)],
                tolerance,
                output,
            )
    return report


def _write_graph(
    network: torch.nn.Module, info: ModelInfo, output: Path, opset: int, dynamic_size: bool
) -> None:
    import onnx

    height, width = info.image_size
    dims = {0: torch.export.Dim.DYNAMIC}
    if dynamic_size:
        dims |= {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    example = torch.randn(2, info.in_channels, height, width)
    try:
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({**dims},),
            verbose=False,
        )
    except Exception as err:
        raise RuntimeError(
            f"torch.onnx could not convert {info.arch} ({type(err).__name__}: {_first_line(err)})"
        ) from err
    model = program.model_proto
    metadata = {
        METADATA_KEY: info.to_json(),
        "seglab_dynamic_size": json.dumps(dynamic_size),
        "seglab_classes": json.dumps(info.names),
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(output))


def _parity(
    network: torch.nn.Module,
    path: Path,
    shapes: list[tuple[int, ...]],
    tolerance: float,
    shown: Path,
) -> list[dict[str, Any]]:
    """onnxruntime (the model at `path`, named `shown` in errors) against PyTorch on a seeded
    random input of each shape, one session."""
    session = _session(path, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    checks = []
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            expected = network(x).numpy()
        actual = session.run(None, {"image": x.numpy()})[0]
        if actual.shape != expected.shape:
            raise ParityError(f"ONNX logits have shape {actual.shape}, PyTorch's {expected.shape}")
        diff = float(np.abs(actual - expected).max())
        agreement = float((actual.argmax(1) == expected.argmax(1)).mean())
        scale = max(1.0, float(np.abs(expected).max()))
        if diff > tolerance * scale:
            raise ParityError(
                f"{shown}: at input {list(shape)} the ONNX logits differ from PyTorch's by up to "
                f"{diff:.3g} (argmax agreement {agreement:.4f}), beyond tolerance {tolerance:g} "
                f"x {scale:.3g}; try another opset= or report the architecture"
            )
        checks.append({"shape": list(shape), "max_abs_diff": diff, "argmax_agreement": agreement})
    return checks


class OnnxNetwork:
    """An onnxruntime session behind the torch-network interface the Predictor uses."""

    def __init__(self, session: Any):
        self.session = session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"image": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(logits).to(x.device)  # class_map takes either layout fast


def open_onnx(path: str | Path, device: torch.device) -> tuple[OnnxNetwork, ModelInfo, bool]:
    """The model as a network, its ModelInfo, and whether it accepts any input size."""
    _require_onnx()
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"model={path}: no such ONNX file (write one with seglab export)")
    session = _session(path, device)
    if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        say("note: onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); the ONNX "
            "model runs on the CPU")  # fmt: skip
    info, dynamic_size = _metadata(session, path)
    return OnnxNetwork(session), info, dynamic_size


def load_onnx_predictor(
    path: str | Path, device: str | torch.device = "auto", **options: Any
) -> Predictor:
    """A Predictor running `path` through onnxruntime; `options` as for the torch backend
    (callers go through `seglab.prediction.load_predictor`, which picks the backend)."""
    resolved = resolve_device(device)
    network, info, dynamic_size = open_onnx(path, resolved)
    scales = list(options.get("scales", [1.0]))
    if not dynamic_size and (options.get("mode") == "whole" or scales != [1.0]):
        height, width = info.image_size
        raise ConfigError(
            f"model={path} runs only on {height}x{width} inputs ({info.arch} was exported at a "
            "fixed size): use mode=resize or mode=slide without tta.scales"
        )
    return Predictor(network, info, resolved, **options)


def _metadata(session: Any, path: Path) -> tuple[ModelInfo, bool]:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ConfigError(
            f"model={path}: no seglab metadata (classes, colours, normalisation) in this ONNX "
            "file; export it with `seglab export ckpt=... output=model.onnx`"
        )
    return ModelInfo.from_json(props[METADATA_KEY]), json.loads(props["seglab_dynamic_size"])


def _session(path: Path, device: torch.device) -> Any:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    # No busy-waiting between runs: predict.py decodes, normalises and writes in other threads
    # between forward passes, and a spinning onnxruntime pool would take their cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:
        raise ConfigError(f"model={path}: onnxruntime cannot load it ({_first_line(err)})") from err


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise MissingExtraError(f"{INSTALL_HINT}; missing: {err.name}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
