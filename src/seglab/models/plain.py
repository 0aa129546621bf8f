"""Plain-data checks for the configs a checkpoint carries: mappings of options to numbers,
strings, bools, lists of them and null, each option a parameter of a known builder.

Everything here only inspects values; nothing is imported, called or built, so a crafted value
can do no more than be refused with its key named.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from seglab.errors import ConfigError

_SCALARS = (bool, int, float, str)
PLAIN = "a plain value (number, string, bool, list of them, or null)"


def plain(value: Any, key: str) -> Any:
    """`value` as plain data (tuples become lists), or ConfigError naming `key`.

    Exact types, not isinstance: a subclass of str or int could carry behaviour of its own.
    """
    if OmegaConf.is_config(value):  # the user's composed config, never a checkpoint's
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or type(value) in _SCALARS:
        return value
    if type(value) in (list, tuple):
        return [plain(item, f"{key}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(f"{key}={_show(value)}: expected {PLAIN}, found {type(value).__name__}")


def config_mapping(config: Any, key: str) -> dict[str, Any]:
    """`config` as a dict with string keys, refusing Hydra's `_target_`-style keys by name."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)
    if type(config) is not dict and not isinstance(config, Mapping):
        raise ConfigError(f"{key}={_show(config)}: expected a mapping of options")
    for option, value in config.items():
        if type(option) is not str:
            raise ConfigError(f"{key}: option {_show(option)} is not a string")
        if option.startswith("_"):
            raise ConfigError(
                f"{key}.{option}={_show(value)}: seglab never imports or calls what a config "
                f"names; {key} names a registered builder by 'name' (the model by 'arch') and "
                "holds only that builder's options"
            )
    return dict(config)


def check_options(
    options: Mapping[str, Any], key: str, accepted: Mapping[str, Any], builder: str
) -> dict[str, Any]:
    """`options` as plain data, each one a name in `accepted` (parameter -> default) with a
    value of its default's kind; ConfigError names the first one that is not."""
    checked = {}
    for option, value in options.items():
        where = f"{key}.{option}"
        if option not in accepted:
            raise ConfigError(
                f"{where} is not an option of {builder}; choose from {sorted(accepted)}"
            )
        value = plain(value, where)
        problem = _kind_problem(value, accepted[option])
        if problem:
            raise ConfigError(f"{where}={value!r}: {problem}")
        checked[option] = value
    return checked


def _kind_problem(value: Any, default: Any) -> str | None:
    """What is wrong with `value` for a parameter whose default is `default`, or None.

    Only the kinds the defaults show are checked: ranges are the builders' (and the config
    validation's) business, and a wrong range cannot run code.
    """
    if default is inspect.Parameter.empty or default is None:
        return None
    if type(default) is bool:
        ok, kind = type(value) is bool, "true or false"
    elif type(default) in (int, float):
        ok, kind = type(value) in (int, float), "a number"
    elif type(default) is str:
        ok, kind = value is None or type(value) is str, "a string"
    elif type(default) in (list, tuple):
        ok, kind = type(value) is list, "a list"
    else:
        return None
    return None if ok else f"expected {kind}, found {type(value).__name__}"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
