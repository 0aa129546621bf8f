"""`trainer.precision: auto`: bfloat16 mixed precision where the hardware computes it natively.

Mixed precision changes how fast a step runs, not what the delivered model is: the weights stay
float32, the loss is computed in float32 (`SegmentationModule._loss`), and validation and test
run without autocast, so their scores are those of predict.py's default float32 forward pass.
"""

from __future__ import annotations

import torch

from seglab.console import say

# Lightning's own names, accepted as given.
LIGHTNING_PRECISIONS = (
    "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "transformer-engine",
    "64", "32", "16", "bf16",
)  # fmt: skip


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX tiles).

    Without either, PyTorch emulates bf16 on a CPU, which is slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def training_device(accelerator: str) -> str:
    """The device type Lightning will train on for `trainer.accelerator`: cuda, mps or cpu."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    if accelerator in ("auto", "gpu", "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_precision(value: str | int, accelerator: str = "auto") -> str:
    """`auto` -> `bf16-mixed` on a CUDA GPU that supports bf16 or a CPU with native bf16,
    else `32-true`; any other value is Lightning's and passes through.

    On a 2-core AMD EPYC with AVX-512 BF16, bf16-mixed trained FPN ResNet-18 1.3-1.6x faster
    per step than float32 (benchmarks/README.md); on CPUs without it bf16 is emulated, slower."""
    if str(value) != "auto":
        return str(value)
    device = training_device(str(accelerator))
    if device == "cuda" and torch.cuda.is_bf16_supported():
        chosen, why = "bf16-mixed", "this GPU supports bfloat16"
    elif device == "cpu" and cpu_has_native_bf16():
        chosen, why = "bf16-mixed", "this CPU computes bfloat16 natively: AVX-512 BF16 or AMX"
    else:
        chosen, why = "32-true", f"no native bfloat16 on this {device.upper()}"
    say(
        f"trainer.precision=auto -> {chosen} ({why}); validation and test run in float32; "
        "set trainer.precision=32-true to train in float32"
    )
    return chosen


def full_precision(device: torch.device) -> torch.autocast:
    """A block without autocast: float32 computation inside a mixed-precision Trainer's step."""
    return torch.autocast(device.type, enabled=False)
