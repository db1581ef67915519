"""Raw config layers: :func:`merge` (deep, key by key), and the one parser of ``section.key=value`` overrides that
`lakd train`, `lakd sweep --set`, `lakd demo --set` and the sweep files' ``overrides`` mappings (lakd.sweep.spec)
all go through: :func:`parse_override`, :func:`dotted_overrides`, :func:`nest_overrides`, and
:func:`format_value`, the exact inverse of :func:`parse_value`."""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping

import yaml

from lakd.config.errors import ConfigError


def merge(base: dict, top: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``top`` replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str) -> Any:
    """An override's value: YAML (numbers, true/false, null, [lists], {maps}, strings)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def format_value(value: Any) -> str:
    """The text :func:`parse_value` reads back as ``value`` (a float stays a float: YAML, not JSON)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)
    return text.removesuffix("\n...\n").removesuffix("\n")


def _check_key(key: Any, item: Any) -> str:
    if not isinstance(key, str) or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override '{item}' is not of the form section.key=value")
    return key.strip()


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.iters=100"`` -> ``("train.iters", 100)``."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"override '{item}' is not of the form section.key=value")
    return _check_key(key, item), parse_value(value)


def dotted_overrides(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides written as a mapping (a sweep file's ``overrides``): dotted keys, nested sections or both ->
    ``{"train.iters": 40}`` (an empty mapping is a value: ``model.options: {}``)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        key = _check_key(key, f"{key}: {value!r}")
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": v for k, v in dotted_overrides(value).items()})
        else:
            out[key] = copy.deepcopy(value)
    return out


def nest_overrides(pairs: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> dict:
    """Dotted overrides -> the nested dict merged onto a config, in order (a later one wins; a mapping value
    merges like a config layer)."""
    out: dict = {}
    for key, value in (pairs.items() if isinstance(pairs, Mapping) else pairs):
        *parents, leaf = _check_key(key, key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}' conflicts with an earlier override of '{part}'")
        old = node.get(leaf)
        node[leaf] = merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else copy.deepcopy(value)
    return out


def parse_overrides(items: Iterable[str]) -> dict:
    """``["train.iters=100", "data.crop_size=[64,64]"]`` -> nested dict."""
    return nest_overrides(parse_override(item) for item in items)
