"""What a model, loss, optimizer or schedule config may name: registry keys, never import paths.

Checkpoints carry these configs and travel between teams, so rebuilding a module from one must
not be able to call anything but seglab's own builders. Each config is `{name: key, option:
value, ...}` (the model's key is its smp `arch`): the key is looked up in a fixed table below,
every option must be a parameter of that builder, and every value plain data (numbers,
strings, bools, lists of them, null). Nothing is imported by name, so a crafted config can only
be refused, with a message naming the key; a blocklist of dangerous targets could never be
complete, a closed table is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from seglab.data.class_weights import METHODS as CLASS_WEIGHT_METHODS
from seglab.errors import ConfigError
from seglab.models import schedulers
from seglab.models.factory import check_names, create_model
from seglab.models.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
    WeightedSum,
)
from seglab.models.optim import param_groups
from seglab.models.plain import check_options, config_mapping, plain

LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "jaccard": JaccardLoss,
    "lovasz": LovaszSoftmaxLoss,
    "tversky": TverskyLoss,
}
WEIGHTED_SUM = "weighted_sum"  # `losses: {label: <a LOSSES entry>}`, `weights: {label: number}`
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
SCHEDULERS: dict[str, Callable[..., schedulers.SchedulerConfigs]] = {
    "constant": schedulers.constant,
    "cosine": schedulers.cosine,
    "onecycle": schedulers.onecycle,
    "plateau": schedulers.plateau,
    "poly": schedulers.poly,
}
# Options smp forwards to a timm encoder ('tu-' names) that seglab lets a config set; timm's other
# keyword arguments (checkpoint_path, pretrained_cfg_overlay, ...) would read files by name.
TIMM_OPTIONS = {"dynamic_img_size": False, "drop_rate": 0.0, "drop_path_rate": 0.0}
# Set by seglab itself (classes), or not plain data (aux_params: a dict for an extra head).
_NOT_MODEL_OPTIONS = ("classes", "aux_params", "kwargs")


def check_model(config: Any, key: str = "model") -> dict[str, Any]:
    """The model config as plain data, or ConfigError: `arch` an smp architecture, the options
    `create_model`'s and that architecture's own parameters (plus TIMM_OPTIONS)."""
    config = config_mapping(config, key)
    arch = config.get("arch")
    archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if not isinstance(arch, str) or arch.lower() not in archs:
        raise ConfigError(f"{key}.arch={arch!r} is not an smp architecture; choose one of {archs}")
    options = {
        **_parameters(create_model, skip=("arch", *_NOT_MODEL_OPTIONS)),
        **_parameters(smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()], skip=_NOT_MODEL_OPTIONS),
        **TIMM_OPTIONS,
    }
    # init_from names weights to start from (training.build loads them), not the network.
    rest = {k: v for k, v in config.items() if k not in ("arch", "init_from")}
    checked = {"arch": arch, **check_options(rest, key, options, f"architecture {arch!r}")}
    encoder = checked.get("encoder_name", options["encoder_name"])
    if type(encoder) is not str:
        raise ConfigError(f"{key}.encoder_name={encoder!r}: expected an encoder name")
    check_names(arch, encoder)
    return checked


def check_loss(config: Any, key: str = "loss", resolved: bool = True) -> dict[str, Any]:
    """The loss config as plain data, or ConfigError: one of LOSSES with its options, or a
    WEIGHTED_SUM whose terms are LOSSES entries.

    `resolved=False` also accepts a class-weight method (`auto`, ...) in place of the numbers
    it becomes once the training data is counted, for checking a config before reading data.
    """
    config = config_mapping(config, key)
    name = _name(config, key, "loss", [*LOSSES, WEIGHTED_SUM])
    rest = {k: v for k, v in config.items() if k != "name"}
    _check_class_weights(rest.get("class_weights"), f"{key}.class_weights", resolved)
    if name != WEIGHTED_SUM:
        return {"name": name, **check_options(rest, key, _parameters(LOSSES[name]), name)}
    unknown = sorted(set(rest) - {"losses", "weights", "class_weights"})
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]} is not an option of loss {WEIGHTED_SUM!r}; "
            "choose from ['class_weights', 'losses', 'weights']"
        )
    terms = config_mapping(rest.get("losses"), f"{key}.losses")
    if not terms:
        raise ConfigError(f"{key}.losses is empty: give at least one term, e.g. ce: {{name: ce}}")
    checked_terms = {
        label: _check_term(term, f"{key}.losses.{label}", resolved) for label, term in terms.items()
    }
    weights = config_mapping(rest.get("weights") or {}, f"{key}.weights")
    for label, weight in weights.items():
        if label not in terms:
            raise ConfigError(f"{key}.weights.{label} names no term of {key}.losses {list(terms)}")
        if type(plain(weight, f"{key}.weights.{label}")) not in (int, float):
            raise ConfigError(f"{key}.weights.{label}={weight!r}: expected a number")
    checked: dict[str, Any] = {"name": name}
    if "class_weights" in rest:
        checked["class_weights"] = plain(rest["class_weights"], f"{key}.class_weights")
    checked["losses"] = checked_terms
    if "weights" in rest:
        checked["weights"] = dict(weights)
    return checked


def check_optimizer(config: Any, key: str = "optimizer") -> dict[str, Any]:
    """The optimizer config as plain data, or ConfigError: one of OPTIMIZERS, its options the
    torch class's own plus `encoder_lr_mult` (seglab's encoder/decoder LR split)."""
    config = config_mapping(config, key)
    name = _name(config, key, "optimizer", list(OPTIMIZERS))
    options = {**_parameters(OPTIMIZERS[name], skip=("params",)), "encoder_lr_mult": 1.0}
    rest = {k: v for k, v in config.items() if k != "name"}
    if "lr" not in rest:
        raise ConfigError(f"{key}.lr is missing: give the learning rate, e.g. {key}.lr=1e-3")
    return {"name": name, **check_options(rest, key, options, f"optimizer {name!r}")}


def check_scheduler(config: Any, key: str = "scheduler") -> dict[str, Any] | None:
    """The schedule config as plain data (None or {} for none), or ConfigError: one of
    SCHEDULERS with the options of its factory in `seglab.models.schedulers`."""
    if config is None:
        return None
    config = config_mapping(config, key)
    if not config:
        return None
    name = _name(config, key, "schedule", list(SCHEDULERS))
    options = _parameters(SCHEDULERS[name], skip=("optimizer", "total_steps", "clock"))
    rest = {k: v for k, v in config.items() if k != "name"}
    return {"name": name, **check_options(rest, key, options, f"schedule {name!r}")}


def build_model(config: Any, classes: int) -> nn.Module:
    options = check_model(config)
    return create_model(options.pop("arch"), classes=classes, **options)


def build_loss(config: Any) -> nn.Module:
    config = check_loss(config)
    if config["name"] != WEIGHTED_SUM:
        return _build_term(config)
    terms = {label: _build_term(term) for label, term in config["losses"].items()}
    return WeightedSum(terms, config.get("weights"), config.get("class_weights"))


def build_optimizer(config: Any, net: nn.Module) -> torch.optim.Optimizer:
    """The optimizer over `param_groups(net)`: encoder/decoder LR split, no decay on norms."""
    options = check_optimizer(config)
    cls = OPTIMIZERS[options.pop("name")]
    mult = float(options.pop("encoder_lr_mult", 1.0))
    groups = param_groups(net, options["lr"], options.get("weight_decay", 0.0), mult)
    return cls(groups, **options)


def build_schedulers(
    config: Any,
    optimizer: torch.optim.Optimizer,
    total_steps: int | None,
    clock: Callable[[], float] | None = None,
) -> schedulers.SchedulerConfigs:
    """The schedule over `total_steps` optimizer steps or, with a time budget, over `clock`
    (the share of the budget spent, 0 to 1): cosine and poly then end their decay when the
    budget ends, whatever the speed of the machine."""
    options = check_scheduler(config)
    if options is None:
        return []
    name = options.pop("name")
    factory = SCHEDULERS[name]
    if clock is not None and "clock" in inspect.signature(factory).parameters:
        return factory(optimizer, total_steps=total_steps or 0, clock=clock, **options)
    if total_steps is None:
        raise ConfigError(
            f"scheduler={name} counts optimizer steps, which a time budget (budget= or "
            "trainer.max_time) leaves unknown: use scheduler=cosine or scheduler=poly, which "
            "follow the budget, or give trainer.max_epochs instead of a budget"
        )
    return factory(optimizer, total_steps=total_steps, **options)


def _check_term(config: Any, key: str, resolved: bool) -> dict[str, Any]:
    config = config_mapping(config, key)
    name = _name(config, key, "loss term", list(LOSSES))
    rest = {k: v for k, v in config.items() if k != "name"}
    _check_class_weights(rest.get("class_weights"), f"{key}.class_weights", resolved)
    return {"name": name, **check_options(rest, key, _parameters(LOSSES[name]), name)}


def _build_term(config: dict[str, Any]) -> nn.Module:
    options = dict(config)
    return LOSSES[options.pop("name")](**options)


def _check_class_weights(value: Any, key: str, resolved: bool) -> None:
    """None or one number per class; before the data is counted, also a method name."""
    value = plain(value, key)
    if value is None or (not resolved and value in CLASS_WEIGHT_METHODS):
        return
    if type(value) is not list or any(type(w) not in (int, float) or w < 0 for w in value):
        methods = "" if resolved else f", or one of {list(CLASS_WEIGHT_METHODS)}"
        raise ConfigError(
            f"{key}={value!r:.80}: expected null or one non-negative number per class{methods}"
        )


def _name(config: Mapping[str, Any], key: str, kind: str, choices: list[str]) -> str:
    name = config.get("name")
    if not isinstance(name, str) or name not in choices:
        found = " is missing" if name is None else f"={name!r} is not a seglab {kind}"
        raise ConfigError(f"{key}.name{found}; choose one of {sorted(choices)}")
    return name


def _parameters(builder: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword parameters of `builder` and their defaults (`inspect.Parameter.empty` if none)."""
    params = inspect.signature(builder).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in ("self", *skip) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
