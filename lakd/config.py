"""Typed training configuration: dataclasses, YAML presets, dotted ``key=value`` overrides.

A configuration is built in three layers, each a plain dict merged onto the one before:

1. the dataclass defaults below (the paper's common settings: SGD momentum 0.9, weight decay 1e-4,
   poly 0.9, global batch 16, DeepLabV3-ResNet18, ...);
2. a YAML file: a preset name (``lakd/presets/<name>.yaml``, e.g. ``cityscapes`` or ``synthetic``) or a
   path; a file may start from a preset with ``base: <preset>``;
3. dotted overrides ``train.iters=100 data.crop_size=[64,64] teacher.export=null`` (values are YAML).

The merged dict is then converted to :class:`Config`; an unknown key or a value of the wrong type raises
:class:`ConfigError` naming the key, before anything is written anywhere.  ``teacher.model`` is a
*partial* model section merged onto ``model`` (empty = the teacher-stage model has the same architecture
as the student).  Relative paths are made absolute so a resolved config works from any directory (Slurm
jobs start elsewhere).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
STAGES = ("teacher", "student", "baseline")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value. One line, names the key."""


# ----------------------------------------------------------------------------------------------- sections
@dataclass
class RunConfig:
    name: str = "default"  # run directory: <runs_dir>/<name>/<stage>/
    runs_dir: str = "runs"
    seed: int = 0
    # where catalogue weights live (model.pretrained: <name>); None: $LAKD_WEIGHTS_DIR, else ~/.cache/lakd/weights
    weights_dir: Optional[str] = None


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    # manifests default to <shards_dir>/<dataset>-<split>.manifest.json (lakd.data.build_shards writes them)
    shards_dir: str = "shards/out"
    train_split: str = "train"
    val_split: str = "val"
    train_manifest: Optional[str] = None
    val_manifest: Optional[str] = None
    num_classes: Optional[int] = None  # None: the dataset card's
    card: Optional[str] = None  # dataset folder: your dataset card file (YAML/JSON; lakd.data.user_card)
    crop_size: list[int] = field(default_factory=lambda: [512, 512])  # (height, width)
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    mean: Optional[list[float]] = None  # None: ImageNet mean/std (0-255 scale, RGB)
    std: Optional[list[float]] = None
    num_workers: int = 2
    shuffle_buffer: Optional[int] = None  # None: the loader's default
    # a manifest is data: its `pipe:` (runs a shell command) and URL shard entries are opened only if true
    allow_pipe: bool = False
    # decoded images larger than this many pixels are skipped and counted as corrupt (bounded memory/time)
    max_pixels: int = 64_000_000


@dataclass
class ModelConfig:
    name: str = "deeplabv3"
    backbone: str = "resnet18"
    width: float = 1.0
    aux: bool = True
    # a local weights file, or a catalogue name (`lakd weights list`) looked up in run.weights_dir
    pretrained: Optional[str] = None
    options: dict[str, Any] = field(default_factory=dict)  # further build_model keyword arguments


@dataclass
class TeacherConfig:
    # teacher-stage architecture: a partial model section merged onto `model` ({} = same as the student)
    model: ModelConfig = field(default_factory=ModelConfig)
    # student stage: the frozen teacher's export. None: <runs_dir>/<run>/teacher/teacher.safetensors.
    # The KD row points this at an image-only model, e.g. <runs_dir>/<other run>/baseline/baseline.safetensors
    export: Optional[str] = None


@dataclass
class NoiseConfig:
    """Label Noising Module (lakd.method.label_noise.LabelNoiser); defaults = the official code."""

    code_dim: int = 1  # label channels fed to the teacher
    sigma: float = 0.03  # pixel noise while training the teacher
    fixed_sigma: float = 0.02  # pixel noise of the fixed code used at distillation / evaluation time
    # 3, not the official 100: lakd divides images by their std, the official code does not, and x100 then
    # drowns the image in the first conv (docs/method.md section 4.2)
    scale: float = 3.0


@dataclass
class TeacherLossConfig:
    """Dual-path teacher objective (lakd.method.objectives.TeacherObjective)."""

    aux_weight: float = 0.4
    consistency: Literal["cwd", "kl", "mse", "none"] = "cwd"
    consistency_weight: float = 5.0
    temperature: float = 4.0
    dual_path: bool = True  # False: single-path ablation (one noising, no consistency term)
    consistency_warmup: int = 0  # ramp the consistency weight from 0 over N steps (0: official, no ramp)
    label_dropout: float = 0.0  # probability per image of a zeroed label channel (0: official)


@dataclass
class StudentLossConfig:
    """Student / baseline objective (lakd.method.objectives.StudentObjective)."""

    aux_weight: float = 0.02
    kd: Literal["cwd", "pixel", "none"] = "cwd"
    kd_weight: float = 3.0
    temperature: float = 4.0
    teacher_label_mode: Literal["fixed", "zeros"] = "fixed"  # label code fed to a label-assisted teacher


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9  # sgd
    weight_decay: float = 1e-4
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    eps: float = 1e-8  # adamw
    impl: Literal["native", "apex"] = "native"  # native: torch fused/foreach; apex: NVIDIA apex fused (optional)
    # poly schedule: lr = max(min_lr, base * (1 - step / iters) ** power), optional linear warm-up
    poly_power: float = 0.9
    warmup_iters: int = 0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    iters: int = 40000  # optimizer steps (one step = one global batch)
    batch_size: int = 16  # global batch: micro_batch_size * grad_accum * world_size
    micro_batch_size: Optional[int] = None  # per process; None: batch_size // world_size (no accumulation)
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    zero_stage: int = 0  # DeepSpeed ZeRO stage: 0, 1 or 2
    # bf16 = autocast (parameters and BatchNorm stay fp32); fp16 = DeepSpeed's fp16 block, dynamic loss scaling
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deepspeed: Optional[str] = None  # a DeepSpeed JSON file merged over lakd's (lakd.engine.ds_engine)
    compile: bool = False  # run the model through torch.compile
    # SyncBatchNorm: auto = on GPUs with several processes; true / false force it (true needs GPUs)
    sync_bn: Union[Literal["auto"], bool] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class EvalConfig:
    every: int = 4000  # periodic evaluation on the val shards every N steps (0: only at the end)
    mode: Literal["whole", "slide", "msflip"] = "whole"
    crop_size: Optional[list[int]] = None  # slide mode window; None: data.crop_size
    stride: Optional[list[int]] = None  # slide mode stride; None: two thirds of the window
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])  # msflip mode
    flip: bool = True  # msflip mode
    max_images: Optional[int] = None  # periodic evaluations only: first N val images (final: all)
    best_on: Literal["label", "image"] = "label"  # teacher stage: best model by the eval with / without label


@dataclass
class CheckpointConfig:
    every: int = 1000  # steps
    keep_last: int = 2
    keep_best: bool = True
    resume: bool = True  # resume from the newest complete checkpoint of the run directory


@dataclass
class LogConfig:
    every: int = 1  # metrics.jsonl line every N steps
    print_every: int = 50  # plain progress line every N steps when stderr is not a terminal
    progress: Literal["auto", "bar", "plain", "none"] = "auto"
    tensorboard: bool = True  # event files in <stage dir>/tensorboard/ (lakd.engine.monitor)
    wandb: bool = False  # also log to Weights & Biases (needs the wandb package)
    wandb_project: str = "lakd"
    preview_images: int = 4  # validation predictions shown per evaluation (TensorBoard / W&B images)


@dataclass
class DistConfig:
    timeout_s: int = 1800  # collective timeout: a dead rank ends the job instead of hanging it
    backend: Literal["auto", "gloo", "nccl"] = "auto"


@dataclass
class Config:
    stage: Literal["teacher", "student", "baseline"] = "teacher"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    teacher_loss: TeacherLossConfig = field(default_factory=TeacherLossConfig)
    student_loss: StudentLossConfig = field(default_factory=StudentLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    # ---- derived values -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """``<runs_dir>/<run name>`` (holds one folder per stage)."""
        return Path(self.run.runs_dir) / self.run.name

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / self.stage

    @property
    def stage_model(self) -> ModelConfig:
        """The architecture trained by this stage (teacher stage: ``teacher.model``)."""
        return self.teacher.model if self.stage == "teacher" else self.model

    def manifest(self, split: Literal["train", "val"]) -> Path:
        explicit = self.data.train_manifest if split == "train" else self.data.val_manifest
        if explicit:
            return Path(explicit)
        name = self.data.train_split if split == "train" else self.data.val_split
        return Path(self.data.shards_dir) / f"{self.data.dataset}-{name}.manifest.json"

    def teacher_export(self) -> Path:
        """Student stage: the ``.safetensors`` export of the frozen teacher."""
        if self.teacher.export:
            return Path(self.teacher.export)
        return self.run_dir / "teacher" / "teacher.safetensors"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)

    def hash(self) -> str:
        """Hash of what determines the trained weights (not paths, logging or checkpoint cadence)."""
        d = self.to_dict()
        for key in ("run", "log", "checkpoint", "dist"):
            d.pop(key)
        d["seed"] = self.run.seed
        for key in ("shards_dir", "train_manifest", "val_manifest", "num_workers", "allow_pipe", "max_pixels"):
            d["data"].pop(key)
        d["eval"] = {}  # evaluation does not change the weights
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists of values inline (``crop_size: [512, 1024]``)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


# ------------------------------------------------------------------------------------- dict <-> typed
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float, dict -> dataclass)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}': expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list of {_type_name(arg)}, got {value!r}")
        return [_convert(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return copy.deepcopy(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string: accept numeric literals written that way
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .inf / .nan as floats; no setting means them
            raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if tp is Any:
        return copy.deepcopy(value)
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module, not user input


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?)" if close else ""
            where = f"'{prefix}'" if prefix else "the top level"
            raise ConfigError(
                f"unknown config key '{full}'{hint}; valid keys in {where}: {', '.join(names)}"
            )
    kwargs = {}
    for name in names:
        if name in data:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(data[name], hints[name], full)
    return cls(**kwargs)


# ----------------------------------------------------------------------------------- loading + merging
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
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
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must name a preset or a file, got {base!r}")
    if not Path(base).is_absolute() and (path.parent / base).exists():
        base = str(path.parent / base)
    return merge(_load_layer(base, seen + (path.resolve(),)), data)


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


def parse_overrides(items: list[str]) -> dict:
    """``["train.iters=100", "data.crop_size=[64,64]"]`` -> nested dict."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier override of '{part}'")
            node = nxt
        node[parts[-1]] = parse_value(value)
    return out


def _absolute_paths(cfg: Config, base: Path) -> None:
    def absolute(p: Optional[str]) -> Optional[str]:
        if p is None or p == "" or "://" in p or p.startswith("pipe:"):
            return p
        return str((base / os.path.expanduser(p)).resolve()) if not Path(p).is_absolute() else p

    cfg.run.runs_dir = absolute(cfg.run.runs_dir)
    cfg.data.shards_dir = absolute(cfg.data.shards_dir)
    cfg.data.train_manifest = absolute(cfg.data.train_manifest)
    cfg.data.val_manifest = absolute(cfg.data.val_manifest)
    cfg.teacher.export = absolute(cfg.teacher.export)
    cfg.run.weights_dir = absolute(cfg.run.weights_dir)
    cfg.data.card = absolute(cfg.data.card)
    cfg.train.deepspeed = absolute(cfg.train.deepspeed)
    for m in (cfg.model, cfg.teacher.model):
        # a catalogue name (letters, digits, '-', '_'; lakd.models.catalogue.NAME_RE) stays a name
        if not (m.pretrained and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", m.pretrained)):
            m.pretrained = absolute(m.pretrained)


def build_config(raw: dict, *, cwd: Optional[Path] = None) -> Config:
    """Typed, validated :class:`Config` from a merged raw dict (defaults fill what is missing)."""
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
    cfg = _from_dict(Config, raw)
    _absolute_paths(cfg, cwd or Path.cwd())
    validate(cfg)
    return cfg


def load_config(source: Optional[str], overrides: list[str] = (), *, stage: Optional[str] = None,
                cwd: Optional[Path] = None) -> Config:
    """Defaults <- preset/file ``source`` (None: defaults only) <- ``overrides``; ``stage`` wins over both."""
    raw = _load_layer(source) if source else {}
    raw = merge(raw, parse_overrides(list(overrides)))
    if stage is not None:
        raw["stage"] = stage
    return build_config(raw, cwd=cwd)


def config_from_yaml_text(text: str) -> Config:
    """A resolved config as saved with a run (``config.yaml``)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a mapping of sections")
    return build_config(data)


# ------------------------------------------------------------------------------------------ validation
def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Value checks beyond types. Raises :class:`ConfigError` naming the key."""
    _check(bool(cfg.run.name) and "/" not in cfg.run.name and cfg.run.name not in (".", ".."),
           f"config key 'run.name': must be a non-empty folder name, got {cfg.run.name!r}")
    d = cfg.data
    _check(len(d.crop_size) == 2 and all(v > 0 for v in d.crop_size),
           f"config key 'data.crop_size': expected [height, width] > 0, got {d.crop_size}")
    _check(len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1],
           f"config key 'data.scale_range': expected [low, high] with 0 < low <= high, got {d.scale_range}")
    for key in ("mean", "std"):
        v = getattr(d, key)
        _check(v is None or len(v) == 3, f"config key 'data.{key}': expected 3 values (RGB), got {v}")
    _check(d.std is None or all(s > 0 for s in d.std), "config key 'data.std': values must be > 0")
    _check(d.num_classes is None or d.num_classes >= 2,
           f"config key 'data.num_classes': must be >= 2, got {d.num_classes}")
    _check(d.num_workers >= 0, "config key 'data.num_workers': must be >= 0")
    _check(d.max_pixels >= 1, "config key 'data.max_pixels': must be >= 1")
    _check(d.dataset != "folder" or d.card is not None,
           "config key 'data.card': data.dataset=folder needs your dataset card file (YAML or JSON)")
    _check(d.card is None or d.dataset == "folder",
           f"config key 'data.card': a dataset card is for data.dataset=folder, not {d.dataset}")
    if d.card is not None:
        from lakd.data.user_card import use_card_file

        try:  # the card of dataset `folder` in this process (class count, names, palette)
            use_card_file(d.card)
        except ValueError as exc:
            raise ConfigError(f"config key 'data.card': {exc}") from None
    for prefix, m in (("model", cfg.model), ("teacher.model", cfg.teacher.model)):
        _check(m.width > 0, f"config key '{prefix}.width': must be > 0, got {m.width}")
    _check(cfg.noise.code_dim >= 1, f"config key 'noise.code_dim': must be >= 1, got {cfg.noise.code_dim}")
    for key in ("sigma", "fixed_sigma", "scale"):
        _check(getattr(cfg.noise, key) >= 0, f"config key 'noise.{key}': must be >= 0")
    for key in ("aux_weight", "consistency_weight", "consistency_warmup"):
        _check(getattr(cfg.teacher_loss, key) >= 0, f"config key 'teacher_loss.{key}': must be >= 0")
    _check(0 <= cfg.teacher_loss.label_dropout <= 1, "config key 'teacher_loss.label_dropout': must be in [0, 1]")
    _check(cfg.teacher_loss.temperature > 0, "config key 'teacher_loss.temperature': must be > 0")
    for key in ("aux_weight", "kd_weight"):
        _check(getattr(cfg.student_loss, key) >= 0, f"config key 'student_loss.{key}': must be >= 0")
    _check(cfg.student_loss.temperature > 0, "config key 'student_loss.temperature': must be > 0")
    o = cfg.optim
    _check(o.lr > 0, f"config key 'optim.lr': must be > 0, got {o.lr}")
    _check(0 <= o.momentum < 1, f"config key 'optim.momentum': must be in [0, 1), got {o.momentum}")
    _check(o.weight_decay >= 0, "config key 'optim.weight_decay': must be >= 0")
    _check(o.poly_power >= 0, "config key 'optim.poly_power': must be >= 0")
    _check(o.warmup_iters >= 0, "config key 'optim.warmup_iters': must be >= 0")
    _check(0 <= o.min_lr <= o.lr, "config key 'optim.min_lr': must be in [0, optim.lr]")
    _check(not o.nesterov or o.momentum > 0, "config key 'optim.nesterov': needs optim.momentum > 0")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
           f"config key 'optim.betas': expected two values in [0, 1), got {o.betas}")
    _check(o.eps > 0, "config key 'optim.eps': must be > 0")
    t = cfg.train
    _check(t.iters >= 1, f"config key 'train.iters': must be >= 1, got {t.iters}")
    _check(t.batch_size >= 1, f"config key 'train.batch_size': must be >= 1, got {t.batch_size}")
    _check(t.micro_batch_size is None or 1 <= t.micro_batch_size <= t.batch_size,
           "config key 'train.micro_batch_size': must be in [1, train.batch_size]")
    _check(t.grad_clip >= 0, "config key 'train.grad_clip': must be >= 0 (0 = off)")
    _check(t.zero_stage != 3, "config key 'train.zero_stage': 3 is refused: with lakd's BatchNorm models ZeRO-3 "
           "trains different weights than stages 0-2 (which agree bitwise), so it is not trusted; use 2")
    _check(t.zero_stage in (0, 1, 2), f"config key 'train.zero_stage': must be 0, 1 or 2, got {t.zero_stage}")
    e = cfg.eval
    _check(e.every >= 0, "config key 'eval.every': must be >= 0 (0 = only at the end)")
    for key in ("crop_size", "stride"):
        v = getattr(e, key)
        _check(v is None or (len(v) == 2 and all(x > 0 for x in v)),
               f"config key 'eval.{key}': expected [height, width] > 0, got {v}")
    _check(len(e.scales) >= 1 and all(s > 0 for s in e.scales), "config key 'eval.scales': values must be > 0")
    _check(e.max_images is None or e.max_images >= 1, "config key 'eval.max_images': must be >= 1")
    c = cfg.checkpoint
    _check(c.every >= 1, f"config key 'checkpoint.every': must be >= 1, got {c.every}")
    _check(c.keep_last >= 1, f"config key 'checkpoint.keep_last': must be >= 1, got {c.keep_last}")
    _check(cfg.log.every >= 1, "config key 'log.every': must be >= 1")
    _check(cfg.log.print_every >= 1, "config key 'log.print_every': must be >= 1")
    _check(cfg.log.preview_images >= 0, "config key 'log.preview_images': must be >= 0")
    _check(cfg.dist.timeout_s >= 10, "config key 'dist.timeout_s': must be >= 10 seconds")


def batch_layout(cfg: Config, world_size: int) -> tuple[int, int]:
    """``(micro_batch_size, grad_accum)`` per process for ``world_size`` processes; the global batch is fixed."""
    t = cfg.train
    micro = t.micro_batch_size
    if micro is None:
        if t.batch_size % world_size:
            raise ConfigError(
                f"config key 'train.batch_size': {t.batch_size} does not split over {world_size} processes; "
                "choose a multiple of the process count or set train.micro_batch_size"
            )
        return t.batch_size // world_size, 1
    if t.batch_size % (micro * world_size):
        raise ConfigError(
            f"config key 'train.micro_batch_size': batch_size {t.batch_size} is not micro_batch_size {micro} "
            f"x {world_size} processes x an integer number of accumulation steps"
        )
    return micro, t.batch_size // (micro * world_size)
