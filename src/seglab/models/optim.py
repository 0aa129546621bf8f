"""Parameter groups: encoder/decoder learning-rate split, no weight decay on norms and biases."""

from __future__ import annotations

from typing import Any

from torch import nn


def param_groups(
    net: nn.Module, lr: float, weight_decay: float = 0.0, encoder_lr_mult: float = 1.0
) -> list[dict[str, Any]]:
    """Up to four named groups: encoder/decoder x decay/no_decay; frozen parameters left out.

    A pretrained encoder often wants a smaller learning rate than a fresh decoder
    (`encoder_lr_mult` < 1). Weight decay pulls norm scales and biases (every 1-D parameter)
    towards zero for no regularising benefit, so those get none. The names appear in the
    logged learning rates (`lr-AdamW/decoder`, ...).
    """
    encoder = getattr(net, "encoder", None)
    in_encoder = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    groups: dict[str, dict[str, Any]] = {}
    for param in net.parameters():
        if not param.requires_grad:
            continue
        part = "encoder" if id(param) in in_encoder else "decoder"
        decay = param.ndim > 1
        name = part if decay else f"{part}_no_decay"
        group = groups.setdefault(
            name,
            {
                "name": name,
                "params": [],
                "lr": lr * (encoder_lr_mult if part == "encoder" else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(param)
    return [
        groups[n]
        for n in ("encoder", "encoder_no_decay", "decoder", "decoder_no_decay")
        if n in groups
    ]
