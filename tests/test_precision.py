"""`trainer.precision: auto`: bf16-mixed where the hardware computes bfloat16, float32 scores."""

from __future__ import annotations

import pytest
import torch

from seglab import precision
from seglab.config import validate
from seglab.errors import ConfigError
from tests.helpers import compose_train


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_follows_the_cpu(monkeypatch, capsys, native: bool, expected: str):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", "auto") == expected
    printed = capsys.readouterr().out
    assert f"trainer.precision=auto -> {expected}" in printed
    assert "trainer.precision=32-true" in printed  # how to choose otherwise


def test_an_explicit_precision_wins(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("32-true", "cpu") == "32-true"
    assert precision.resolve_precision("16-mixed", "gpu") == "16-mixed"


def test_auto_is_the_default_and_a_typo_is_named():
    assert compose_train([]).trainer.precision == "auto"
    with pytest.raises(ConfigError, match="trainer.precision.*'bf16_mixed'"):
        validate(compose_train(["data.path=/your/export", "trainer.precision=bf16_mixed"]))


def test_full_precision_turns_autocast_off():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
        with precision.full_precision(x.device):
            assert layer(x).dtype == torch.float32
