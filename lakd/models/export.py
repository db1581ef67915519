"""Model exports: the files handed from one stage to the next (teacher -> student stage, -> evaluation).

An export `<p>` is two files, each written atomically (`lakd.io.atomic_output`: a reader never sees half a file):
- `<p>.safetensors`: the plain state dict with bare keys (no `module.` prefixes), no pickle.
- `<p>.json`: `{"model": model.config, "label_channels": int, "num_classes": int, "dataset": str,
  "mean": [...], "std": [...], **meta}`.
`load_export(p)` rebuilds the architecture from the JSON with `build_model(**config)` and loads the weights
strictly from the safetensors file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lakd.io import atomic_output

# ImageNet statistics on the 0-255 scale, RGB (the same values as lakd.data.transforms.IMAGENET_MEAN/STD)
_DEFAULT_MEAN = [123.675, 116.28, 103.53]
_DEFAULT_STD = [58.395, 57.12, 57.375]
_SUFFIXES = (".safetensors", ".json")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare lakd model inside DeepSpeed / DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    from lakd.models.segmentor import Segmentor

    for _ in range(8):
        if isinstance(model, Segmentor):
            break
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def _base(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in _SUFFIXES else p


def export_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """`(<p>.safetensors, <p>.json)` for `<p>`, `<p>.safetensors` or `<p>.json`."""
    base = _base(path)
    return base.parent / (base.name + ".safetensors"), base.parent / (base.name + ".json")


def save_export(model: nn.Module, path_without_suffix: str | os.PathLike, meta: dict[str, Any] | None = None
                ) -> tuple[Path, Path]:
    """Write `<p>.safetensors` + `<p>.json` atomically; returns their paths.

    `meta` supplies `dataset`, `mean`, `std` (defaults: "unknown" and the ImageNet 0-255 statistics) and any
    further JSON-serialisable fields; `label_channels` defaults to `in_channels - 3`.
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"save_export needs a lakd model built by build_model (with .config), got "
                         f"{type(model).__name__}")
    meta = dict(meta or {})
    in_ch = int(config["in_channels"])
    label_channels = int(meta.pop("label_channels", max(0, in_ch - 3)))
    if label_channels < 0 or label_channels > in_ch:
        raise ValueError(f"label_channels={label_channels} does not fit a model with in_channels={in_ch}")
    num_classes = int(meta.pop("num_classes", config["num_classes"]))
    if num_classes != int(config["num_classes"]):
        raise ValueError(f"meta num_classes={num_classes} disagrees with the model's {config['num_classes']}")
    doc = {"model": config, "label_channels": label_channels, "num_classes": num_classes,
           "dataset": str(meta.pop("dataset", "unknown")),
           "mean": [float(v) for v in meta.pop("mean", _DEFAULT_MEAN)],
           "std": [float(v) for v in meta.pop("std", _DEFAULT_STD)], **meta}
    try:
        text = json.dumps(doc, indent=1, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"export meta is not JSON-serialisable: {exc}") from None

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in _bare_state_dict(model).items()}
    st_path, js_path = export_paths(path_without_suffix)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    # both files are written before either is renamed into place: a failure leaves the old export whole
    with atomic_output(st_path) as tmp_st, atomic_output(js_path) as tmp_js:
        save_file(state, str(tmp_st), metadata={"format": "pt", "lakd": "export"})
        tmp_js.write_text(text + "\n")
    return st_path, js_path


def _bare_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def read_export_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON side of an export, validated (raises ValueError naming the file)."""
    _, js_path = export_paths(path)
    if not js_path.is_file():
        raise ValueError(f"export metadata {js_path} does not exist")
    try:
        meta = json.loads(js_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"export metadata {js_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise ValueError(f"export metadata {js_path} has no 'model' config object")
    for key in ("name", "backbone", "num_classes", "in_channels"):
        if key not in meta["model"]:
            raise ValueError(f"export metadata {js_path}: model config lacks {key!r}")
    return meta


def load_export(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load an export written by `save_export`: returns `(model, meta)` (model in eval mode).

    Only safetensors weights are read (no pickle). Raises ValueError on a missing, corrupt or mismatching file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lakd.models.registry import build_model

    st_path, js_path = export_paths(path)
    meta = read_export_meta(path)
    if not st_path.is_file():
        raise ValueError(f"export weights {st_path} do not exist")
    try:
        state = load_file(str(st_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"export weights {st_path} are not a readable safetensors file: {exc}") from None
    cfg = dict(meta["model"])
    try:
        model = build_model(**cfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"export metadata {js_path}: cannot rebuild the model: {exc}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        desc = _describe_keys(missing, unexpected)
        if wrong:
            desc = "; ".join(filter(None, [desc, f"{len(wrong)} shape mismatch(es) (file vs model: "
                                                 f"{', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''})"]))
        raise ValueError(f"export weights {st_path} do not match {cfg['name']}-{cfg['backbone']}: {desc}")
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    model.eval()
    return model, meta


def _describe_keys(missing, unexpected, limit: int = 5) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({', '.join(list(missing)[:limit])}"
                     f"{', ...' if len(missing) > limit else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(list(unexpected)[:limit])}"
                     f"{', ...' if len(unexpected) > limit else ''})")
    return "; ".join(parts)
