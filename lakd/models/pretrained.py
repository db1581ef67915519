"""`model.pretrained` for a training stage: resolve it, check that it fits, build the model with it.

`model.pretrained` is a local file (any layout `lakd.models.weights` reads: ImageNet backbones, whole models,
lakd exports such as a trained baseline) or a catalogue name (`lakd weights list`), found in `run.weights_dir`
/ `$LAKD_WEIGHTS_DIR`. A catalogue entry's implied options (torchvision ResNets: `deep_stem: false`) are added
to `model.options`; a conflicting value is an error.

    check_pretrained(model_cfg, num_classes=21, in_channels=4)   # before anything is written: LoadReport or None
    model, report = build_with_pretrained(model_cfg, num_classes=21, in_channels=4)

Both raise `PretrainedError` (a ValueError with one line naming the file and the first tensor that does not
fit). The check builds the model on the meta device, so it allocates nothing and copies nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lakd.models.catalogue import Entry, apply_options, resolve
from lakd.models.weights import LoadReport, fit_hint, load_weights


class PretrainedError(ValueError):
    """`model.pretrained` cannot be used (one line: the key, the file, what does not fit)."""


# model config keys of an export that are not build options
_NOT_OPTIONS = ("name", "backbone", "num_classes", "in_channels", "width", "aux", "extra_channel_std")


def _export_options(model_cfg, path: Path, key: str) -> dict[str, Any] | None:
    """A lakd export (`<stage>.safetensors` + `.json`, e.g. a sweep's `init_from` baseline) says what it is:
    the same model is required, and the options it was built with fill the ones `model.options` leaves unset
    (so a baseline built with catalogue options, such as deep_stem: false, is rebuilt the same way)."""
    from lakd.models.export import export_paths, read_export_meta

    if path.suffix != ".safetensors" or not export_paths(path)[1].is_file():
        return None
    try:
        arch = read_export_meta(path)["model"]
    except ValueError as exc:
        raise PretrainedError(f"config key '{key}.pretrained': {exc}") from None
    theirs = f"{arch.get('name')}-{arch.get('backbone')} width {arch.get('width')}"
    mine = f"{model_cfg.name}-{model_cfg.backbone} width {float(model_cfg.width)}"
    if theirs != mine:
        raise PretrainedError(f"config key '{key}.pretrained': {path} is a {theirs} export, the model is {mine}")
    return {k: v for k, v in arch.items() if k not in _NOT_OPTIONS}


def _resolve(model_cfg, weights_dir: str | None, key: str) -> tuple[Path, Entry | None, dict[str, Any]]:
    try:
        r = resolve(model_cfg.pretrained, weights_dir)
        options = apply_options(model_cfg.options, r.entry)
    except ValueError as exc:
        raise PretrainedError(f"config key '{key}.pretrained': {exc}") from None
    if r.entry is not None and r.entry.backbone != model_cfg.backbone:
        raise PretrainedError(f"config key '{key}.pretrained': {r.entry.name} holds {r.entry.backbone} weights, "
                              f"but {key}.backbone is {model_cfg.backbone}")
    implied = _export_options(model_cfg, r.path, key) if r.entry is None else None
    for k, v in (implied or {}).items():
        if options.get(k) is None:
            options[k] = v
    return r.path, r.entry, options


def build_options(options: dict) -> dict:
    """`model.options` as build_model keywords: an option set to null keeps the model's default (so a sweep entry
    can undo a preset's DeepLabV3-only option)."""
    return {k: v for k, v in options.items() if v is not None}


def _build(model_cfg, num_classes: int, in_channels: int, options: dict, key: str):
    from lakd.models import build_model

    options = build_options(options)
    try:
        return build_model(model_cfg.name, model_cfg.backbone, num_classes, in_channels, width=model_cfg.width,
                           aux=model_cfg.aux, **options)
    except ValueError as exc:
        raise PretrainedError(f"config key '{key}': {exc}") from None


def _load(model, path: Path, entry: Entry | None, options: dict, key: str, dry_run: bool) -> LoadReport:
    try:
        report = load_weights(model, path, strict=False, dry_run=True,
                              extra_channel_std=float(options.get("extra_channel_std", 0.1)))
    except ValueError as exc:  # unreadable file, unknown layout
        raise PretrainedError(f"config key '{key}.pretrained': {exc}") from None
    report.source = entry.name if entry is not None else ""
    if not report.ok:
        more = len(report.mismatched) + len(report.unexpected) + len(report.missing) - 1
        extra = f" (+{more} more)" if more else ""
        raise PretrainedError(f"config key '{key}.pretrained': {path} does not fit {model_cfg_name(model)}: "
                              f"{report.first_misfit()}{extra}{fit_hint(report, model, key)}")
    if not dry_run:
        report = load_weights(model, path, strict=True, extra_channel_std=float(options.get("extra_channel_std", 0.1)))
        report.source = entry.name if entry is not None else ""
    return report


def model_cfg_name(model) -> str:
    cfg = getattr(model, "config", {}) or {}
    return f"{cfg.get('name')}-{cfg.get('backbone')} ({cfg.get('in_channels')} input channels)"


def check_pretrained(model_cfg, *, num_classes: int, in_channels: int = 3, weights_dir: str | None = None,
                     key: str = "model") -> LoadReport | None:
    """Check `model_cfg.pretrained` against the architecture `model_cfg` describes, without writing or
    allocating anything. None when no pretrained weights are set; raises PretrainedError (one line)."""
    if not model_cfg.pretrained:
        return None
    path, entry, options = _resolve(model_cfg, weights_dir, key)
    with torch.device("meta"):
        model = _build(model_cfg, num_classes, in_channels, options, key)
    return _load(model, path, entry, options, key, dry_run=True)


def build_with_pretrained(model_cfg, *, num_classes: int, in_channels: int = 3, weights_dir: str | None = None,
                          key: str = "model"):
    """`(model, LoadReport or None)`: the model `model_cfg` describes, with `pretrained` loaded when set."""
    if not model_cfg.pretrained:
        return _build(model_cfg, num_classes, in_channels, dict(model_cfg.options), key), None
    path, entry, options = _resolve(model_cfg, weights_dir, key)
    model = _build(model_cfg, num_classes, in_channels, options, key)
    model.load_report = _load(model, path, entry, options, key, dry_run=False)  # as build_model(pretrained=) does
    return model, model.load_report
