"""Losses as plain `nn.Module`s; combinations are a weighted sum of any of them."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class WeightedSum(nn.Module):
    """`sum_i weight_i * loss_i(logits, target)`, e.g. Dice + cross-entropy."""

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None):
        super().__init__()
        self.losses = nn.ModuleDict(dict(losses))
        weights = dict(weights or {})
        unknown = set(weights) - set(self.losses)
        if unknown:
            raise ValueError(
                f"loss.weights names {sorted(unknown)}, not in loss.losses {list(self.losses)}"
            )
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.losses}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(logits, target) for name, loss in self.losses.items())
