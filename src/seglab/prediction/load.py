"""`load_predictor(path)`: a checkpoint or an .onnx file -> a ready Predictor.

The entry point for every caller that predicts (predict.py, and the server, CVAT function and
ranking to come): load once, then call `.logits`, `.labels`, `.probabilities` or `.predict` on
any number of images of any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seglab.errors import ConfigError
from seglab.prediction.checkpoint import load_checkpoint
from seglab.prediction.predictor import Predictor


def load_predictor(
    path: str | Path, device: str = "auto", amp: bool = False, **options: Any
) -> Predictor:
    """A Predictor for a seglab checkpoint (.ckpt, torch) or an ONNX model (.onnx, from
    `seglab export`, run by onnxruntime); `options` are Predictor's (mode, overlap, flip,
    scales, batch_size). `amp` (bf16/fp16 autocast) applies to checkpoints only."""
    resolved = resolve_device(device)
    if Path(path).suffix.lower() == ".onnx":
        from seglab.prediction.onnx import load_onnx_predictor

        if amp:
            raise ConfigError(
                f"amp=true applies to checkpoints; {path} is an ONNX model, which runs as exported"
            )
        return load_onnx_predictor(path, resolved, **options)
    module, info = load_checkpoint(path, resolved)
    return Predictor(
        module, info, resolved, autocast_dtype=autocast_dtype(amp, resolved), **options
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` is the GPU when there is one; asking for CUDA without one is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA GPU is available here; use device=cpu")
    return torch.device(device)


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware has it (CPUs, Ampere and newer GPUs), else fp16; None = fp32."""
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
