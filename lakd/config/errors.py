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


@dataclasses.dataclass
class Problem:
    """The first problem of a pydantic report, structured: ``key`` is the dotted key at fault as the one line
    shows it; an unknown key also carries the close-match ``hint`` and its section's key (``section``) and field
    names (``valid``)."""

    key: str
    text: str = ""
    unknown: bool = False
    hint: str = ""
    section: str = ""
    valid: tuple = ()


def problem(exc: ValidationError, root: type) -> Problem:
    """pydantic's report on ``root`` (a section dataclass) -> its first problem (a union's members joined)."""
    errors = exc.errors()
    first = errors[0]
    key, tp = _place(first["loc"], root)
    if first["type"] == "unexpected_keyword_argument":
        names = tuple(f.name for f in dataclasses.fields(tp))
        bad = str(first["loc"][-1])
        close = difflib.get_close_matches(bad, names, n=1)
        hint = f" (did you mean '{key + '.' if key else ''}{close[0]}'?)" if close else ""
        return Problem(f"{key + '.' if key else ''}{bad}", unknown=True, hint=hint, section=key, valid=names)
    if first["type"] == "value_error":  # a section's own check, or a field's validator
        cause = first["ctx"]["error"]
        if isinstance(cause, FieldError):
            key = f"{key}.{cause.field}" if key else cause.field
        return Problem(key, str(cause))
    if "[key]" in first["loc"]:
        return Problem(key or "(top level)", f"keys must be strings, got {first['input']!r}")
    same = [_phrase(e, tp) for e in errors if _place(e["loc"], root)[0] == key]
    if len(same) > 1:  # a union: each member refused the value
        same = ["expected " + " or ".join(p.removeprefix("expected ").removeprefix("one of ") for p in same)]
    return Problem(key or "(top level)", f"{same[0]}, got {first['input']!r}")


def one_line(exc: ValidationError, root: type) -> ConfigError:
    """pydantic's report on ``root`` (the Config dataclass) -> one line naming the key (the first problem)."""
    p = problem(exc, root)
    if p.unknown:
        where = f"'{p.section}'" if p.section else "the top level"
        return ConfigError(f"unknown config key '{p.key}'{p.hint}; valid keys in {where}: {', '.join(p.valid)}")
    return ConfigError(f"config key '{p.key}': {p.text}")
