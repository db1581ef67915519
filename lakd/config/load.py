"""Building a :class:`Config`: defaults <- a preset or YAML file (with its ``base:`` chain) <- overrides, validated
in one pass (pydantic) into one :class:`ConfigError` line naming the key, before anything is written."""
from __future__ import annotations

import copy
import dataclasses
import os
from functools import cache
from pathlib import Path
from typing import Iterable, Optional

import yaml
from pydantic import TypeAdapter, ValidationError

from lakd.config.errors import ConfigError, one_line
from lakd.config.overrides import merge, parse_overrides
from lakd.config.sections import Config

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


@cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(Config)


def _validated(raw: dict, cwd: Optional[Path]) -> Config:
    try:
        return _adapter().validate_python(raw, context={"cwd": cwd})
    except ValidationError as exc:
        raise one_line(exc, Config) from None


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(path: Path, what: str = "a config file") -> dict:
    """A YAML file holding a mapping (configs and sweep files); ``{}`` when empty."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of sections")
    return data


def _load_layer(source: str, seen: tuple = ()) -> dict:
    """A preset name or a YAML path, with its ``base:`` chain merged underneath."""
    path = Path(source)
    if not (path.suffix in (".yaml", ".yml") or os.sep in source or path.exists()):
        path = PRESETS_DIR / f"{source}.yaml"
        if not path.exists():
            raise ConfigError(
                f"no config file or preset named '{source}' (presets: {', '.join(list_presets())})"
            )
    elif not path.exists():
        raise ConfigError(f"config file not found: {source}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must name a preset or a file, got {base!r}")
    if not Path(base).is_absolute() and (path.parent / base).exists():
        base = str(path.parent / base)
    return merge(_load_layer(base, seen + (path.resolve(),)), data)


def build_config(raw: dict, *, cwd: Optional[Path] = None) -> Config:
    """Typed, validated :class:`Config` from a merged raw dict (defaults fill what is missing); relative paths
    are taken from ``cwd`` (default: the current directory)."""
    raw = copy.deepcopy(raw)
    model = raw.get("model", {})
    teacher = raw.get("teacher")
    if teacher is None:
        teacher = raw["teacher"] = {}
    if not isinstance(teacher, dict):
        raise ConfigError(f"config key 'teacher': expected a mapping, got {teacher!r}")
    partial = teacher.get("model") or {}
    if not isinstance(model, dict) or not isinstance(partial, dict):
        bad = "model" if not isinstance(model, dict) else "teacher.model"
        raise ConfigError(f"config key '{bad}': expected a mapping")
    teacher["model"] = merge(model, partial)
    for f in dataclasses.fields(Config):  # every section validated with the context (its default paths too)
        if f.name != "stage":
            raw.setdefault(f.name, {})
    return _validated(raw, Path(cwd or Path.cwd()))


def load_config(source: Optional[str], overrides: Iterable[str] = (), *, stage: Optional[str] = None,
                cwd: Optional[Path] = None) -> Config:
    """Defaults <- preset/file ``source`` (None: defaults only) <- ``overrides``; ``stage`` wins over both."""
    raw = _load_layer(source) if source else {}
    raw = merge(raw, parse_overrides(overrides))
    if stage is not None:
        raw["stage"] = stage
    return build_config(raw, cwd=cwd)


def config_from_yaml_text(text: str) -> Config:
    """A resolved config as saved with a run (``config.yaml``)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a mapping of sections")
    return build_config(data)


def validate(cfg: Config) -> None:
    """Checks a :class:`Config` changed after it was built (building one checks it already)."""
    _validated(dataclasses.asdict(cfg), None)
