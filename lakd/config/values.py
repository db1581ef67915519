"""The value types of config fields: strict leaves (YAML `1` is no `true`, `"3"` no 3), finite floats, the
constraints of a field in its annotation (``Positive``, ``NonNeg``, ...), paths made absolute against the
directory the config is loaded from, and the ``section`` decorator every config section uses."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, ValidationInfo
from pydantic.dataclasses import dataclass

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_CATALOGUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # lakd.models.catalogue.NAME_RE


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string: accept numeric literals written that way."""
    return float(value) if isinstance(value, str) and _NUMBER.match(value.strip()) else value


def _absolute(value: str, info: ValidationInfo) -> str:
    """A relative path made absolute against the directory the config is loaded from (``context['cwd']``)."""
    base = (info.context or {}).get("cwd")
    if base is None or value == "" or "://" in value or value.startswith("pipe:") or Path(value).is_absolute():
        return value
    return str((Path(base) / os.path.expanduser(value)).resolve())


def _weights(value: str, info: ValidationInfo) -> str:
    """``model.pretrained``: a catalogue name stays a name, anything else is a path."""
    return value if _CATALOGUE_NAME.fullmatch(value) else _absolute(value, info)


def _pair(value: list[int]) -> list[int]:
    if len(value) != 2 or not all(v > 0 for v in value):
        raise ValueError(f"expected [height, width] > 0, got {value}")
    return value


Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Float = Annotated[float, Strict(), BeforeValidator(_yaml_number)]
Count = Annotated[Int, Field(ge=0)]
Positive = Annotated[Int, Field(ge=1)]
NonNeg = Annotated[Float, Field(ge=0)]
Pos = Annotated[Float, Field(gt=0)]
Path_ = Annotated[Str, AfterValidator(_absolute)]
Weights = Annotated[Str, AfterValidator(_weights)]
Size = Annotated[list[Int], AfterValidator(_pair)]  # (height, width)

# validate_default: defaults go through the same types (a default relative path is made absolute too)
section = dataclass(config=ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True,
                                      defer_build=True))
