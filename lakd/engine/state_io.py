"""Pickle-free state files: a nested Python value with tensors inside -> ``<p>.json`` + ``<p>.safetensors``.

Used for what lakd adds to a checkpoint per rank (data-loader state, RNG states, BatchNorm buffers): the
structure goes to JSON, every tensor / numpy array to safetensors under a generated name, so reading it back
from a shared directory executes no code. Supports dict (any JSON-able keys), list, tuple, int, float, bool,
str, None, torch.Tensor and numpy arrays (dtype kept).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lakd.io import atomic_write_bytes

_FORMAT = "lakd-state-1"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        name = f"t{len(tensors)}"
        arr = value
        if arr.dtype in (np.uint32, np.uint16):  # not all torch builds store these: widen, restore on load
            arr = arr.astype(np.int64)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
        return {"__ndarray__": name, "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a lakd state file")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(np.dtype(value["dtype"]))
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def state_paths(base: str | os.PathLike) -> tuple[Path, Path]:
    base = Path(base)
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".safetensors")


def save_state(base: str | os.PathLike, value: Any) -> None:
    """Write ``value`` to ``<base>.json`` + ``<base>.safetensors`` (each atomically)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": _FORMAT, "value": _encode(value, tensors)}
    js, st = state_paths(base)
    st.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(st, save(tensors) if tensors else save({"_": torch.zeros(0)}))
    atomic_write_bytes(js, json.dumps(doc).encode())


def load_state(base: str | os.PathLike) -> Any:
    """Read a value written by :func:`save_state` (safetensors + JSON only, no pickle)."""
    from safetensors.torch import load

    js, st = state_paths(base)
    doc = json.loads(js.read_text())
    if doc.get("format") != _FORMAT:
        raise ValueError(f"{js}: not a lakd state file")
    tensors = load(st.read_bytes())
    return _decode(doc["value"], tensors)
