"""Typed training configuration: dataclasses, YAML presets, dotted ``key=value`` overrides.

A configuration is built in three layers, each a plain dict merged onto the one before:

1. the dataclass defaults below (the paper's common settings: SGD momentum 0.9, weight decay 1e-4,
   poly 0.9, global batch 16, DeepLabV3-ResNet18, ...);
2. a YAML file: a preset name (``lakd/presets/<name>.yaml``, e.g. ``cityscapes`` or ``synthetic``) or a
   path; a file may start from a preset with ``base: <preset>``;
3. dotted overrides ``train.iters=100 data.crop_size=[64,64] teacher.export=null`` (values are YAML; the
   sweep files' ``overrides`` are read by the same :func:`parse_override` / :func:`nest_overrides`).

The merged dict is then validated into :class:`Config` (pydantic dataclasses): every check sits next to its
field, as a constraint of its type or in its section's ``__post_init__``; names of components are checked
against the registries that build them (models, dataset cards, losses, optimizers, evaluation modes). Any
problem raises one :class:`ConfigError` line naming the key, before anything is written anywhere.
``teacher.model`` is a *partial* model section merged onto ``model`` (empty = the teacher-stage model has the
same architecture as the student). Relative paths are made absolute so a resolved config works from any
directory (Slurm jobs start elsewhere).
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
import typing
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional, Union

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic import ValidationInfo
from pydantic.dataclasses import dataclass

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
STAGES = ("teacher", "student", "baseline")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value. One line, names the key."""


class _FieldError(ValueError):
    """A section's own check failed on ``field`` (the section's place in the config is added by the caller)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise _FieldError(field_name, message)


def _known(value: str, known: Iterable[str], field_name: str, of: str = "") -> None:
    """``value`` is a name the component's registry knows."""
    known = list(known)
    _require(value in known, field_name, f"unknown {value!r}{of} (known: {', '.join(known)})")


# ------------------------------------------------------------------------------------------ value types
# Sections take mappings; their leaves are strict (YAML `1` is no `true`, `"3"` no 3) and floats are finite.
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


# ----------------------------------------------------------------------------------------------- sections
@section
class RunConfig:
    name: Str = "default"  # run directory: <runs_dir>/<name>/<stage>/
    runs_dir: Path_ = "runs"
    seed: Int = 0
    # where catalogue weights live (model.pretrained: <name>); None: $LAKD_WEIGHTS_DIR, else ~/.cache/lakd/weights
    weights_dir: Optional[Path_] = None

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
                 f"must be a non-empty folder name, got {self.name!r}")


@section
class DataConfig:
    dataset: Str = "synthetic"  # a dataset card (lakd.data.list_cards)
    # manifests default to <shards_dir>/<dataset>-<split>.manifest.json (lakd.data.build_shards writes them)
    shards_dir: Path_ = "shards/out"
    train_split: Str = "train"
    val_split: Str = "val"
    train_manifest: Optional[Path_] = None
    val_manifest: Optional[Path_] = None
    num_classes: Optional[Annotated[Int, Field(ge=2)]] = None  # None: the dataset card's
    card: Optional[Path_] = None  # dataset folder: your dataset card file (YAML/JSON; lakd.data.user_card)
    crop_size: Size = field(default_factory=lambda: [512, 512])  # (height, width)
    scale_range: list[Pos] = field(default_factory=lambda: [0.5, 2.0])
    mean: Optional[list[Float]] = None  # None: ImageNet mean/std (0-255 scale, RGB)
    std: Optional[list[Pos]] = None
    num_workers: Count = 2
    shuffle_buffer: Optional[Int] = None  # None: the loader's default
    # a manifest is data: its `pipe:` (runs a shell command) and URL shard entries are opened only if true
    allow_pipe: Bool = False
    # decoded images larger than this many pixels are skipped and counted as corrupt (bounded memory/time)
    max_pixels: Positive = 64_000_000

    def __post_init__(self) -> None:
        low_high = self.scale_range
        _require(len(low_high) == 2 and low_high[0] <= low_high[1], "scale_range",
                 f"expected [low, high] with 0 < low <= high, got {low_high}")
        for key in ("mean", "std"):
            v = getattr(self, key)
            _require(v is None or len(v) == 3, key, f"expected 3 values (RGB), got {v}")
        _require(self.dataset != "folder" or self.card is not None, "card",
                 "data.dataset=folder needs your dataset card file (YAML or JSON)")
        _require(self.card is None or self.dataset == "folder", "card",
                 f"a dataset card is for data.dataset=folder, not {self.dataset}")
        if self.card is not None:
            from lakd.data.user_card import use_card_file

            try:  # the card of dataset `folder` in this process (class count, names, palette)
                use_card_file(self.card)
            except ValueError as exc:
                raise _FieldError("card", str(exc)) from None
        from lakd.data import list_cards

        _known(self.dataset, list_cards(), "dataset")


@section
class ModelConfig:
    name: Str = "deeplabv3"  # lakd.models registry: name and backbone
    backbone: Str = "resnet18"
    width: Pos = 1.0
    aux: Bool = True
    # a local weights file, or a catalogue name (`lakd weights list`) looked up in run.weights_dir
    pretrained: Optional[Weights] = None
    options: dict[str, Any] = field(default_factory=dict)  # further build_model keyword arguments

    def __post_init__(self) -> None:
        from lakd.models import COMBINATIONS

        _known(self.name, COMBINATIONS, "name")
        _known(self.backbone, COMBINATIONS[self.name], "backbone", of=f" for {self.name}")


@section
class TeacherConfig:
    # teacher-stage architecture: a partial model section merged onto `model` ({} = same as the student)
    model: ModelConfig = field(default_factory=ModelConfig)
    # student stage: the frozen teacher's export. None: <runs_dir>/<run>/teacher/teacher.safetensors.
    # The KD row points this at an image-only model, e.g. <runs_dir>/<other run>/baseline/baseline.safetensors
    export: Optional[Path_] = None


@section
class NoiseConfig:
    """Label Noising Module (lakd.method.label_noise.LabelNoiser); defaults = the official code."""

    code_dim: Positive = 1  # label channels fed to the teacher
    sigma: NonNeg = 0.03  # pixel noise while training the teacher
    fixed_sigma: NonNeg = 0.02  # pixel noise of the fixed code used at distillation / evaluation time
    # 3, not the official 100: lakd divides images by their std, the official code does not, and x100 then
    # drowns the image in the first conv (docs/method.md section 4.2)
    scale: NonNeg = 3.0


@section
class TeacherLossConfig:
    """Dual-path teacher objective (lakd.method.objectives.TeacherObjective)."""

    aux_weight: NonNeg = 0.4
    consistency: Str = "cwd"  # lakd.method.objectives.CONSISTENCY_KINDS
    consistency_weight: NonNeg = 5.0
    temperature: Pos = 4.0
    dual_path: Bool = True  # False: single-path ablation (one noising, no consistency term)
    consistency_warmup: Count = 0  # ramp the consistency weight from 0 over N steps (0: official, no ramp)
    label_dropout: Annotated[Float, Field(ge=0, le=1)] = 0.0  # probability per image of a zeroed label channel

    def __post_init__(self) -> None:
        from lakd.method.objectives import CONSISTENCY_KINDS

        _known(self.consistency, CONSISTENCY_KINDS, "consistency")


@section
class StudentLossConfig:
    """Student / baseline objective (lakd.method.objectives.StudentObjective)."""

    aux_weight: NonNeg = 0.02
    kd: Str = "cwd"  # lakd.method.objectives.KD_KINDS
    kd_weight: NonNeg = 3.0
    temperature: Pos = 4.0
    teacher_label_mode: Literal["fixed", "zeros"] = "fixed"  # label code fed to a label-assisted teacher

    def __post_init__(self) -> None:
        from lakd.method.objectives import KD_KINDS

        _known(self.kd, KD_KINDS, "kd")


@section
class OptimConfig:
    name: Str = "sgd"  # lakd.optim.OPTIMIZERS
    lr: Pos = 0.02
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.9  # sgd
    weight_decay: NonNeg = 1e-4
    nesterov: Bool = False  # sgd
    betas: list[Annotated[Float, Field(ge=0, lt=1)]] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    eps: Pos = 1e-8  # adamw
    impl: Str = "native"  # lakd.optim.IMPLS; native: torch fused/foreach; apex: NVIDIA apex fused (optional)
    # poly schedule: lr = max(min_lr, base * (1 - step / iters) ** power), optional linear warm-up
    poly_power: NonNeg = 0.9
    warmup_iters: Count = 0
    min_lr: NonNeg = 0.0

    def __post_init__(self) -> None:
        from lakd.optim import IMPLS, OPTIMIZERS

        _known(self.name, OPTIMIZERS, "name")
        _known(self.impl, IMPLS, "impl")
        _require(self.min_lr <= self.lr, "min_lr", f"must be in [0, optim.lr], got {self.min_lr}")
        _require(not self.nesterov or self.momentum > 0, "nesterov", "needs optim.momentum > 0")
        _require(len(self.betas) == 2, "betas", f"expected two values in [0, 1), got {self.betas}")


@section
class TrainConfig:
    iters: Positive = 40000  # optimizer steps (one step = one global batch)
    batch_size: Positive = 16  # global batch: micro_batch_size * grad_accum * world_size
    micro_batch_size: Optional[Positive] = None  # per process; None: batch_size // world_size (no accumulation)
    grad_clip: NonNeg = 0.0  # max gradient norm; 0 = off
    zero_stage: Int = 0  # DeepSpeed ZeRO stage: 0, 1 or 2
    # bf16 = autocast (parameters and BatchNorm stay fp32); fp16 = DeepSpeed's fp16 block, dynamic loss scaling
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deepspeed: Optional[Path_] = None  # a DeepSpeed JSON file merged over lakd's (lakd.engine.ds_engine)
    compile: Bool = False  # run the model through torch.compile
    # SyncBatchNorm: auto = on GPUs with several processes; true / false force it (true needs GPUs)
    sync_bn: Union[Literal["auto"], Bool] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        _require(self.micro_batch_size is None or self.micro_batch_size <= self.batch_size, "micro_batch_size",
                 "must be in [1, train.batch_size]")
        _require(self.sync_bn is not True or self.device != "cpu", "sync_bn",
                 "true needs GPUs (torch's SyncBatchNorm refuses CPU tensors), train.device is cpu")
        _require(self.precision != "fp16" or self.zero_stage in (1, 2), "precision",
                 "fp16 needs train.zero_stage 1 or 2; at stage 0 DeepSpeed wraps torch's SGD/AdamW in its unfused "
                 "fp16 optimizer, whose steps left the weights unchanged in lakd's checks")
        _require(self.zero_stage != 3, "zero_stage", "3 is refused: with lakd's BatchNorm models ZeRO-3 trains "
                 "different weights than stages 0-2 (which agree bitwise), so it is not trusted; use 2")
        _require(self.zero_stage in (0, 1, 2), "zero_stage", f"must be 0, 1 or 2, got {self.zero_stage}")


@section
class EvalConfig:
    every: Count = 4000  # periodic evaluation on the val shards every N steps (0: only at the end)
    mode: Str = "whole"  # lakd.evaluation.inference.MODES: whole, slide, msflip
    crop_size: Optional[Size] = None  # slide mode window; None: data.crop_size
    stride: Optional[Size] = None  # slide mode stride; None: two thirds of the window
    scales: list[Pos] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])  # msflip mode
    flip: Bool = True  # msflip mode
    max_images: Optional[Positive] = None  # periodic evaluations only: first N val images (final: all)
    best_on: Literal["label", "image"] = "label"  # teacher stage: best model by the eval with / without label

    def __post_init__(self) -> None:
        from lakd.evaluation.inference import MODES

        _known(self.mode, MODES, "mode")
        _require(len(self.scales) >= 1, "scales", "expected at least one scale")


@section
class CheckpointConfig:
    every: Positive = 1000  # steps
    keep_last: Positive = 2
    keep_best: Bool = True
    resume: Bool = True  # resume from the newest complete checkpoint of the run directory


@section
class LogConfig:
    every: Positive = 1  # metrics.jsonl line every N steps
    print_every: Positive = 50  # plain progress line every N steps when stderr is not a terminal
    progress: Literal["auto", "bar", "plain", "none"] = "auto"
    tensorboard: Bool = True  # event files in <stage dir>/tensorboard/ (lakd.engine.monitor)
    wandb: Bool = False  # also log to Weights & Biases (needs the wandb package)
    wandb_project: Str = "lakd"
    preview_images: Count = 4  # validation predictions shown per evaluation (TensorBoard / W&B images)


@section
class DistConfig:
    timeout_s: Annotated[Int, Field(ge=10)] = 1800  # collective timeout: a dead rank ends the job, not hangs it
    backend: Literal["auto", "gloo", "nccl"] = "auto"


@section
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

    def __post_init__(self) -> None:
        """Checks across sections (the one that needs the process count is :func:`batch_layout`)."""
        on_cpu = self.train.device == "cpu"
        _require(not on_cpu or self.dist.backend != "nccl", "dist.backend",
                 "nccl needs CUDA devices, train.device is cpu (use gloo or auto)")
        _require(not on_cpu or self.optim.impl != "apex", "optim.impl",
                 "apex's fused optimizers need CUDA devices, train.device is cpu (use native)")

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


# ----------------------------------------------------------------------------------- one-line errors
_PHRASES = {
    "int_type": "expected an integer", "bool_type": "expected true or false", "float_type": "expected a number",
    "finite_number": "expected a finite number", "string_type": "expected a string",
    "dict_type": "expected a mapping", "dataclass_type": "expected a mapping", "invalid_key": "keys must be strings",
    "literal_error": "expected one of {expected}", "list_type": "expected a list of {item}",
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}", "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
}


def _place(loc: tuple) -> tuple[str, Any]:
    """An error location as a dotted key (``data.crop_size[0]``) and the annotation found there (None when the
    location leaves the dataclasses); stops at a name that is no field (an unknown key, a union member's tag)."""
    key, tp = "", Config
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


def _one_line(exc: ValidationError) -> ConfigError:
    """pydantic's report -> one line naming the key (the first problem; a union's members joined)."""
    errors = exc.errors()
    first = errors[0]
    key, tp = _place(first["loc"])
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
        if isinstance(cause, _FieldError):
            key = f"{key}.{cause.field}" if key else cause.field
        return ConfigError(f"config key '{key}': {cause}")
    if "[key]" in first["loc"]:
        return ConfigError(f"config key '{key or '(top level)'}': keys must be strings, got {first['input']!r}")
    same = [_phrase(e, tp) for e in errors if _place(e["loc"])[0] == key]
    if len(same) > 1:  # a union: each member refused the value
        same = ["expected " + " or ".join(p.removeprefix("expected ").removeprefix("one of ") for p in same)]
    return ConfigError(f"config key '{key or '(top level)'}': {same[0]}, got {first['input']!r}")


@cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(Config)


def _validated(raw: dict, cwd: Optional[Path]) -> Config:
    try:
        return _adapter().validate_python(raw, context={"cwd": cwd})
    except ValidationError as exc:
        raise _one_line(exc) from None


# ----------------------------------------------------------------------------------- loading + merging
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


def merge(base: dict, top: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``top`` replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------------------------------ overrides
# One parser for `section.key=value`: `lakd train`, `lakd sweep --set`, `lakd demo --set` and the sweep files'
# `overrides` mappings (lakd.sweep.spec) all go through parse_override / dotted_overrides / nest_overrides.
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


# ------------------------------------------------------------------------------------------- building
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


def batch_layout(cfg: Config, world_size: int) -> tuple[int, int]:
    """``(micro_batch_size, grad_accum)`` per process for ``world_size`` processes; the global batch is fixed.
    The config-level check that needs the process count, so it runs where that is known."""
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
