"""Everything about a stage that can be checked before the first file is written: ``check_environment``.

The config layer (``lakd.config``) checks each value on its own; this checks the values against the world:
the registries (dataset cards, models and their options, built on the meta device so nothing is allocated),
the files (manifests parsed and compared with the config, shards present, weights that must fit the model,
the teacher export, a run directory that can be written), the hardware (CUDA, apex) and an earlier run in
the same directory (a different configuration is refused before its ``config.yaml`` is touched). Every
problem is one ``ConfigError`` line naming the key or file at fault; ``lakd train`` exits 2 on it.
"""
from __future__ import annotations

import importlib
import tarfile
from pathlib import Path

import torch

from lakd.config import Config, ConfigError, batch_layout
from lakd.rundir import StageDir

__all__ = ["check_environment", "num_classes", "result_path"]


def result_path(cfg: Config) -> Path:
    """The stage's result.json (``lakd.rundir.StageDir``)."""
    return StageDir.of(cfg).result


def num_classes(cfg: Config) -> int:
    from lakd.data import get_card

    return cfg.data.num_classes or get_card(cfg.data.dataset).num_classes


def default_noise(cfg: Config) -> dict:
    """Noise settings for a label-assisted teacher export written without its own (hand-made files)."""
    n = cfg.noise
    return {"code_dim": n.code_dim, "sigma": n.sigma, "fixed_sigma": n.fixed_sigma, "scale": n.scale}


def _model_on_meta(cfg: Config, prefix: str, m) -> torch.nn.Module:
    """The stage's model built on the meta device (no memory, no init cost): the registry checks name,
    backbone, width and options; ``m.pretrained`` is read and must fit."""
    from lakd.models import build_model
    from lakd.models.pretrained import PretrainedError, build_options, check_pretrained

    in_channels = 3 + cfg.noise.code_dim if prefix == "teacher.model" else 3
    try:
        with torch.device("meta"):
            model = build_model(m.name, m.backbone, num_classes(cfg), in_channels, width=m.width, aux=m.aux,
                                **build_options(m.options))
    except (TypeError, ValueError) as exc:
        text = str(exc)
        key = "options" if "option" in text else "width" if text.startswith("width") else None
        raise ConfigError(f"config key '{prefix}{'.' + key if key else ''}': {text}") from None
    if m.pretrained:  # a file or a catalogue name; its implied options; must fit (one line naming the tensor)
        try:
            check_pretrained(m, num_classes=num_classes(cfg), in_channels=in_channels,
                             weights_dir=cfg.run.weights_dir, key=prefix)
        except PretrainedError as exc:
            raise ConfigError(str(exc)) from None
    return model


def _check_model(cfg: Config) -> None:
    """Name and backbone were checked at load (lakd.config); width, options and the weights need the registry."""
    prefix = "teacher.model" if cfg.stage == "teacher" else "model"
    _model_on_meta(cfg, prefix, cfg.stage_model)


def _check_hardware(cfg: Config) -> None:
    cuda = torch.cuda.is_available()
    if cfg.train.device == "cuda" and not cuda:
        raise ConfigError("config key 'train.device': cuda asked for, but torch sees no CUDA device")
    if cfg.train.sync_bn is True and (cfg.train.device == "cpu" or not cuda):
        raise ConfigError("config key 'train.sync_bn': true needs GPUs (torch's SyncBatchNorm refuses CPU "
                          "tensors); 'auto' uses plain BatchNorm with buffers averaged across ranks on CPU")
    if cfg.optim.impl == "apex":
        from lakd.optim import APEX_BUILD_HELP

        try:
            importlib.import_module("apex.optimizers")
        except ImportError as exc:
            raise ConfigError(f"config key 'optim.impl': apex asked for but not importable ({exc}). "
                              f"{APEX_BUILD_HELP}") from None


def _readable_tar(path: str) -> bool:
    """The file is a tar holding at least one member (reads one header)."""
    try:
        with tarfile.open(path, mode="r:") as tf:
            return tf.next() is not None
    except (OSError, tarfile.TarError):
        return False


def _check_manifest(cfg: Config, split: str, world_size: int) -> list[str]:
    """Loads and checks one split's manifest; returns warnings (some local shards missing or empty)."""
    from lakd.data.manifest import is_url, load_manifest

    path = cfg.manifest(split)
    key = f"data.{split}_manifest"
    if not path.is_file():
        raise ConfigError(
            f"{split} shards not found: {path} (build them with `lakd shards build {cfg.data.dataset} "
            f"--split {cfg.data.train_split if split == 'train' else cfg.data.val_split} --out "
            f"{path.parent}`, or set {key})"
        )
    try:
        m = load_manifest(path, allow_pipe=cfg.data.allow_pipe)
        urls = m.shard_urls()
    except ValueError as exc:
        raise ConfigError(f"{split} shards: {exc}") from None
    if m.dataset != cfg.data.dataset:
        raise ConfigError(f"{split} shards: {path} holds dataset {m.dataset!r}, the config trains "
                          f"data.dataset={cfg.data.dataset!r} (set {key} or data.shards_dir)")
    if m.num_classes != num_classes(cfg):
        raise ConfigError(f"{split} shards: {path} has {m.num_classes} classes, the config has "
                          f"{num_classes(cfg)} (data.num_classes)")
    if split == "train":
        readers = world_size * max(1, cfg.data.num_workers)
        if m.total < readers:
            raise ConfigError(
                f"config key 'data.num_workers': {m.total} training samples cannot feed {world_size} process(es) "
                f"x {max(1, cfg.data.num_workers)} workers = {readers} readers; use fewer workers or more data")
    local = [u for u in urls if not is_url(u)]
    bad = [u for u in local if not _readable_tar(u)]
    if local and len(bad) == len(urls):
        raise ConfigError(f"{split} shards: none of the {len(urls)} shards of {path} is a readable tar with "
                          f"samples (missing or empty; check with `lakd shards verify {path}`)")
    if bad:
        return [f"{len(bad)} of {len(urls)} {split} shards of {path} are missing or empty (e.g. {bad[0]}); "
                f"their samples are skipped (lakd shards verify {path})"]
    return []


def _check_teacher_export(cfg: Config) -> None:
    from safetensors import safe_open

    from lakd.engine.teacher_export import noiser_from_meta
    from lakd.models import build_model
    from lakd.models.export import export_paths, read_export_meta

    export = cfg.teacher_export()
    st_path, _ = export_paths(export)
    if not all(p.is_file() for p in export_paths(export)):
        raise ConfigError(
            f"teacher export not found: {export} (run the teacher stage of run '{cfg.run.name}' first, or "
            f"set teacher.export to a <stage>.safetensors written by another run)"
        )
    try:  # the JSON alone: a bad 'noise' block is refused here, before anything is written
        meta = read_export_meta(export)
        noiser_from_meta(meta, export, default_noise(cfg))
    except ValueError as exc:
        raise ConfigError(f"cannot use the teacher export: {exc}") from None
    if int(meta["num_classes"]) != num_classes(cfg):
        raise ConfigError(f"teacher export {export} predicts {meta['num_classes']} classes, "
                          f"dataset {cfg.data.dataset} has {num_classes(cfg)}")
    # the weights must fit the model the metadata describes: compare the header's shapes (nothing loaded)
    try:
        with torch.device("meta"):
            own = {k: tuple(v.shape) for k, v in build_model(**meta["model"]).state_dict().items()}
        with safe_open(str(st_path), framework="pt") as f:
            theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors / the registry raise several types; one line
        raise ConfigError(f"teacher export {export} cannot be used: {type(exc).__name__}: {exc}") from None
    wrong = sorted(set(own) ^ set(theirs)) + [k for k in own if k in theirs and own[k] != theirs[k]]
    if wrong:
        raise ConfigError(f"teacher export {st_path} does not fit the model of its metadata "
                          f"({meta['model'].get('name')}-{meta['model'].get('backbone')}): {len(wrong)} "
                          f"missing, unexpected or mis-shaped tensor(s), e.g. {wrong[0]}")


def _check_run_dir(cfg: Config) -> None:
    """The stage folder can be written, and an earlier run in it was the same experiment."""
    from lakd.engine.checkpoint import CheckpointManager
    from lakd.io import unwritable_entry, unwritable_reason

    sd = StageDir.of(cfg)
    reason = (unwritable_reason(sd.path) or unwritable_entry(sd.path)
              or unwritable_entry(sd.checkpoints, folders=False))
    if reason:
        raise ConfigError(f"config key 'run.runs_dir': {reason}")
    ckpt_dir = sd.checkpoints
    if not ckpt_dir.is_dir():
        return
    ckpt = CheckpointManager(ckpt_dir)
    meta = ckpt.latest()
    if meta is None:
        return
    if not cfg.checkpoint.resume:
        raise ConfigError(f"{ckpt_dir} holds checkpoints and checkpoint.resume=false; choose another "
                          "run.name or remove the folder")
    if meta.get("config_hash") != cfg.hash():
        raise ConfigError(
            f"checkpoint {ckpt_dir / meta['tag']} was written with a different configuration (config hash "
            f"{meta.get('config_hash')}, now {cfg.hash()}); resuming would mix two experiments. Choose "
            f"another run.name, or restore the original settings (see {sd.config})"
        )


def check_environment(cfg: Config, world_size: int = 1) -> list[str]:
    """Raises ConfigError for anything that would fail later; returns warnings worth printing (rank 0).
    Reads files, writes none (the run-dir probe file is created and removed again)."""
    # names of datasets, models and backbones were checked when the config was loaded (lakd.config)
    _check_hardware(cfg)
    if StageDir.of(cfg).finished:
        return []  # finished: the stage only reads its result
    _check_model(cfg)
    micro, accum = batch_layout(cfg, world_size)
    from lakd.engine.ds_engine import resolved_deepspeed_config
    from lakd.engine.monitor import wandb_missing

    resolved_deepspeed_config(cfg, world_size, micro, accum)  # a conflicting train.deepspeed file: refused here
    if cfg.log.wandb and wandb_missing():
        raise ConfigError(f"config key 'log.wandb': true, but {wandb_missing()}")
    warnings = []
    for split in ("train", "val"):
        warnings += _check_manifest(cfg, split, world_size)
    if cfg.stage == "student":
        _check_teacher_export(cfg)
    _check_run_dir(cfg)
    return warnings
