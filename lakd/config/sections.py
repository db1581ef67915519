"""The config sections (pydantic dataclasses) and :class:`Config`: every check next to its field, as a
constraint of its type (lakd.config.values) or in its section's ``__post_init__``; names of components checked
against the registries that build them; checks across sections in ``Config.__post_init__``, and the one that
needs the process count in :func:`batch_layout`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field

from lakd.components import COMBINATIONS, CONSISTENCY_KINDS, EVAL_MODES, IMPLS, KD_KINDS, OPTIMIZERS
from lakd.config.errors import ConfigError, FieldError, known_name, require
from lakd.config.values import (Bool, Count, Float, Int, NonNeg, Path_, Pos, Positive, Size, Str, Weights,
                                section)

STAGES = ("teacher", "student", "baseline")


@section
class RunConfig:
    name: Str = "default"  # run directory: <runs_dir>/<name>/<stage>/
    runs_dir: Path_ = "runs"
    seed: Int = 0
    # where catalogue weights live (model.pretrained: <name>); None: $LAKD_WEIGHTS_DIR, else ~/.cache/lakd/weights
    weights_dir: Optional[Path_] = None

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
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
        require(len(low_high) == 2 and low_high[0] <= low_high[1], "scale_range",
                f"expected [low, high] with 0 < low <= high, got {low_high}")
        for key in ("mean", "std"):
            v = getattr(self, key)
            require(v is None or len(v) == 3, key, f"expected 3 values (RGB), got {v}")
        require(self.dataset != "folder" or self.card is not None, "card",
                "data.dataset=folder needs your dataset card file (YAML or JSON)")
        require(self.card is None or self.dataset == "folder", "card",
                f"a dataset card is for data.dataset=folder, not {self.dataset}")
        if self.card is not None:
            from lakd.data.user_card import use_card_file

            try:  # the card of dataset `folder` in this process (class count, names, palette)
                use_card_file(self.card)
            except ValueError as exc:
                raise FieldError("card", str(exc)) from None
        from lakd.data import list_cards

        known_name(self.dataset, list_cards(), "dataset")


@section
class ModelConfig:
    name: Str = "deeplabv3"  # a model of lakd.components.COMBINATIONS, with one of its backbones
    backbone: Str = "resnet18"
    width: Pos = 1.0
    aux: Bool = True
    # a local weights file, or a catalogue name (`lakd weights list`) looked up in run.weights_dir
    pretrained: Optional[Weights] = None
    options: dict[str, Any] = field(default_factory=dict)  # further build_model keyword arguments

    def __post_init__(self) -> None:
        known_name(self.name, COMBINATIONS, "name")
        known_name(self.backbone, COMBINATIONS[self.name], "backbone", of=f" for {self.name}")


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
    consistency: Str = "cwd"  # lakd.components.CONSISTENCY_KINDS
    consistency_weight: NonNeg = 5.0
    temperature: Pos = 4.0
    dual_path: Bool = True  # False: single-path ablation (one noising, no consistency term)
    consistency_warmup: Count = 0  # ramp the consistency weight from 0 over N steps (0: official, no ramp)
    label_dropout: Annotated[Float, Field(ge=0, le=1)] = 0.0  # probability per image of a zeroed label channel

    def __post_init__(self) -> None:
        known_name(self.consistency, CONSISTENCY_KINDS, "consistency")


@section
class StudentLossConfig:
    """Student / baseline objective (lakd.method.objectives.StudentObjective)."""

    aux_weight: NonNeg = 0.02
    kd: Str = "cwd"  # lakd.components.KD_KINDS
    kd_weight: NonNeg = 3.0
    temperature: Pos = 4.0
    teacher_label_mode: Literal["fixed", "zeros"] = "fixed"  # label code fed to a label-assisted teacher

    def __post_init__(self) -> None:
        known_name(self.kd, KD_KINDS, "kd")


@section
class OptimConfig:
    name: Str = "sgd"  # lakd.components.OPTIMIZERS
    lr: Pos = 0.02
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.9  # sgd
    weight_decay: NonNeg = 1e-4
    nesterov: Bool = False  # sgd
    betas: list[Annotated[Float, Field(ge=0, lt=1)]] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    eps: Pos = 1e-8  # adamw
    impl: Str = "native"  # lakd.components.IMPLS; native: torch fused/foreach; apex: NVIDIA apex fused (optional)
    # poly schedule: lr = max(min_lr, base * (1 - step / iters) ** power), optional linear warm-up
    poly_power: NonNeg = 0.9
    warmup_iters: Count = 0
    min_lr: NonNeg = 0.0

    def __post_init__(self) -> None:
        known_name(self.name, OPTIMIZERS, "name")
        known_name(self.impl, IMPLS, "impl")
        require(self.min_lr <= self.lr, "min_lr", f"must be in [0, optim.lr], got {self.min_lr}")
        require(not self.nesterov or self.momentum > 0, "nesterov", "needs optim.momentum > 0")
        require(len(self.betas) == 2, "betas", f"expected two values in [0, 1), got {self.betas}")


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
        require(self.micro_batch_size is None or self.micro_batch_size <= self.batch_size, "micro_batch_size",
                "must be in [1, train.batch_size]")
        require(self.sync_bn is not True or self.device != "cpu", "sync_bn",
                "true needs GPUs (torch's SyncBatchNorm refuses CPU tensors), train.device is cpu")
        require(self.precision != "fp16" or self.zero_stage in (1, 2), "precision",
                "fp16 needs train.zero_stage 1 or 2; at stage 0 DeepSpeed wraps torch's SGD/AdamW in its unfused "
                "fp16 optimizer, whose steps left the weights unchanged in lakd's checks")
        require(self.zero_stage != 3, "zero_stage", "3 is refused: with lakd's BatchNorm models ZeRO-3 trains "
                "different weights than stages 0-2 (which agree bitwise), so it is not trusted; use 2")
        require(self.zero_stage in (0, 1, 2), "zero_stage", f"must be 0, 1 or 2, got {self.zero_stage}")


@section
class EvalConfig:
    every: Count = 4000  # periodic evaluation on the val shards every N steps (0: only at the end)
    mode: Str = "whole"  # lakd.components.EVAL_MODES: whole, slide, msflip
    crop_size: Optional[Size] = None  # slide mode window; None: data.crop_size
    stride: Optional[Size] = None  # slide mode stride; None: two thirds of the window
    scales: list[Pos] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])  # msflip mode
    flip: Bool = True  # msflip mode
    max_images: Optional[Positive] = None  # periodic evaluations only: first N val images (final: all)
    best_on: Literal["label", "image"] = "label"  # teacher stage: best model by the eval with / without label

    def __post_init__(self) -> None:
        known_name(self.mode, EVAL_MODES, "mode")
        require(len(self.scales) >= 1, "scales", "expected at least one scale")


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
        require(not on_cpu or self.dist.backend != "nccl", "dist.backend",
                "nccl needs CUDA devices, train.device is cpu (use gloo or auto)")
        require(not on_cpu or self.optim.impl != "apex", "optim.impl",
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
