"""Config errors: :class:`ConfigError` (one line naming the key), the sections' own checks (:func:`require`,
:func:`known_name`), and pydantic's report turned into that one line (:func:`one_line`)."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable, Union

from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value. One line, names the key."""


class FieldError(ValueError):
    """A section's own check failed on ``field`` (the section's place in the config is added by the caller)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def require(ok: bool, field_name: str, message: str) -> None:
    """A section's own check (in its ``__post_init__``): ``field_name`` is the field at fault."""
    if not ok:
        raise FieldError(field_name, message)


def known_name(value: str, known: Iterable[str], field_name: str, of: str = "") -> None:
    """``value`` is a name the component's registry knows."""
    known = list(known)
    require(value in known, field_name, f"unknown {value!r}{of} (known: {', '.join(known)})")


# ----------------------------------------------------------------------------------- one-line errors
_PHRASES = {
    "int_type": "expected an integer", "bool_type": "expected true or false", "float_type": "expected a number",
    "finite_number": "expected a finite number", "string_type": "expected a string",
    "dict_type": "expected a mapping", "dataclass_type": "expected a mapping", "invalid_key": "keys must be strings",
    "literal_error": "expected one of {expected}", "list_type": "expected a list of {item}",
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}", "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
}


def _place(loc: tuple, root: type) -> tuple[str, Any]:
    """An error location as a dotted key (``data.crop_size[0]``) and the annotation found there (None when the
    location leaves the dataclasses); stops at a name that is no field (an unknown key, a union member's tag)."""
    key, tp = "", root
    for part in loc:
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if isinstance(part, int) and typing.get_origin(tp) is list:
            key, tp = f"{key}[{part}]", None
        elif part in hints:
            tp = hints[part]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if typing.get_origin(tp) is Union and len(args) == 1 else tp  # Optional[X] -> X
            key = f"{key}.{part}" if key else part
        else:
            break
    return key, tp


def _phrase(err: dict, tp: Any) -> str:
    item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else Any
    text = _PHRASES.get(err["type"], err["msg"])
    return text.format(item=getattr(item, "__name__", item), **(err.get("ctx") or {}))


def one_line(exc: ValidationError, root: type) -> ConfigError:
    """pydantic's report on ``root`` (the Config dataclass) -> one line naming the key (the first problem;
    a union's members joined)."""
    errors = exc.errors()
    first = errors[0]
    key, tp = _place(first["loc"], root)
    if first["type"] == "unexpected_keyword_argument":
        names = [f.name for f in dataclasses.fields(tp)]
        bad = str(first["loc"][-1])
        close = difflib.get_close_matches(bad, names, n=1)
        hint = f" (did you mean '{key + '.' if key else ''}{close[0]}'?)" if close else ""
        where = f"'{key}'" if key else "the top level"
        return ConfigError(f"unknown config key '{key + '.' if key else ''}{bad}'{hint}; "
                           f"valid keys in {where}: {', '.join(names)}")
    if first["type"] == "value_error":  # a section's own check, or a field's validator
        cause = first["ctx"]["error"]
        if isinstance(cause, FieldError):
            key = f"{key}.{cause.field}" if key else cause.field
        return ConfigError(f"config key '{key}': {cause}")
    if "[key]" in first["loc"]:
        return ConfigError(f"config key '{key or '(top level)'}': keys must be strings, got {first['input']!r}")
    same = [_phrase(e, tp) for e in errors if _place(e["loc"], root)[0] == key]
    if len(same) > 1:  # a union: each member refused the value
        same = ["expected " + " or ".join(p.removeprefix("expected ").removeprefix("one of ") for p in same)]
    return ConfigError(f"config key '{key or '(top level)'}': {same[0]}, got {first['input']!r}")
