"""One stage's parts on this process: ``assemble(cfg, denv, device) -> Stage``, a dataclass of named parts.

Everything a training session needs (the DeepSpeed engine and its schedule, the objective, the training stream
and the factory that makes it, the evaluator, the exporter, the checkpoint directory, the frozen teacher) is
built here, once, without running anything; :func:`lakd.engine.stage.run_stage` only orchestrates them.
Benchmarks build the same parts through this function, so they measure the stage as ``lakd train`` runs it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lakd.config import Config, ConfigError, batch_layout
from lakd.engine import batchnorm, rng
from lakd.engine import distributed as D
from lakd.engine.callbacks import ExportBest
from lakd.engine.checkpoint import CheckpointManager
from lakd.engine.environment import default_noise, num_classes
from lakd.engine.teacher_export import TeacherExport
from lakd.engine.trainer import EvalResult, autocast_context, data_counts, sum_over_ranks
from lakd.io import naming_disk_full
from lakd.rundir import StageDir

log = logging.getLogger(__name__)

__all__ = ["Stage", "assemble", "build_model", "checkpoints_for", "TrainLoaderFactory", "Evaluator", "Exporter",
           "warn"]


def warn(text: str) -> None:
    """A one-line warning (rank 0 decides whether to call it)."""
    log.warning("lakd train: warning: %s", text)


# ------------------------------------------------------------------------------------------ settings
def class_names(cfg: Config) -> list[str]:
    from lakd.data import get_card

    names = list(get_card(cfg.data.dataset).class_names)
    return names + [f"class_{c}" for c in range(len(names), num_classes(cfg))]


def normalisation(cfg: Config) -> tuple[list[float], list[float]]:
    from lakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return list(cfg.data.mean or IMAGENET_MEAN), list(cfg.data.std or IMAGENET_STD)


def checkpoints_for(cfg: Config) -> CheckpointManager:
    """The stage's checkpoint directory (stateless: run_stage opens it before assembly to clean it up)."""
    return CheckpointManager(StageDir.of(cfg).checkpoints, keep_last=cfg.checkpoint.keep_last,
                             keep_best=cfg.checkpoint.keep_best)


def build_model(cfg: Config, in_channels: int):
    """The stage's model and, when ``pretrained`` is set, what loading it did (a LoadReport, also kept on the
    model for result.json "init"). ``pretrained`` may name a catalogue entry (lakd.models.pretrained)."""
    from lakd.models.pretrained import build_with_pretrained

    key = "teacher.model" if cfg.stage == "teacher" else "model"
    return build_with_pretrained(cfg.stage_model, num_classes=num_classes(cfg), in_channels=in_channels,
                                 weights_dir=cfg.run.weights_dir, key=key)


def noiser_from_config(cfg: Config):
    """The teacher stage's own label noiser, from ``cfg.noise``."""
    from lakd.method.label_noise import LabelNoiser

    n = cfg.noise
    return LabelNoiser(num_classes(cfg), code_dim=n.code_dim, sigma=n.sigma, fixed_sigma=n.fixed_sigma,
                       scale=n.scale)


# ---------------------------------------------------------------------------------------------- parts
@dataclass
class TrainLoaderFactory:
    """Makes this rank's training stream (a fresh one per call; ``seed_offset`` shifts the data seed)."""

    cfg: Config
    rank: int
    world: int
    micro: int
    mean: list
    std: list
    device: torch.device

    def __call__(self, seed_offset: int = 0):
        from lakd.data.pipeline import build_train_loader
        from lakd.data.prefetch import Prefetcher

        d = self.cfg.data
        kw = {} if d.shuffle_buffer is None else {"shuffle_buffer": d.shuffle_buffer}
        stream = build_train_loader(
            self.cfg.manifest("train"), batch_size=self.micro, crop_size=tuple(d.crop_size),
            seed=self.cfg.run.seed + seed_offset, rank=self.rank, world_size=self.world,
            num_workers=d.num_workers, scale_range=tuple(d.scale_range), mean=self.mean, std=self.std,
            pin_memory=self.device.type == "cuda", num_classes=num_classes(self.cfg), allow_pipe=d.allow_pipe,
            max_pixels=d.max_pixels, **kw,
        )
        return Prefetcher(stream) if d.num_workers > 0 else stream  # hand-off off the step's critical path


class PreviewCollector:
    """``on_prediction`` of an evaluation: keeps the first ``limit`` (key, label | prediction image) pairs."""

    def __init__(self, out: list, limit: int, colorize: Callable):
        self.out, self.limit, self.colorize = out, limit, colorize

    def __call__(self, keys, pred, label) -> None:
        from lakd.engine.monitor import preview_pair

        for key, p, y in zip(keys, pred.numpy(), label.numpy()):
            if len(self.out) < self.limit:
                self.out.append((str(key), preview_pair(y, p, self.colorize)))


class Evaluator:
    """``evaluator(max_images) -> EvalResult`` for ``model``: the val set with the eval settings; a label-assisted
    teacher (``noiser``) is evaluated with its fixed label code ("label") and with a zero label ("image")."""

    def __init__(self, cfg: Config, model, *, rank: int, world: int, device: torch.device, mean, std, noiser=None):
        self.cfg, self.model, self.rank, self.world, self.device = cfg, model, rank, world, device
        self.mean, self.std, self.noiser = mean, std, noiser
        self.num_classes = num_classes(cfg)
        e = cfg.eval
        crop = e.crop_size or cfg.data.crop_size
        stride = e.stride or [max(1, c * 2 // 3) for c in crop]
        kw = dict(mode=e.mode, crop_size=tuple(crop), stride=tuple(stride), scales=list(e.scales), flip=e.flip,
                  device=device)
        if e.mode == "whole":
            kw.update(crop_size=None, stride=None, scales=None, flip=None)
        elif e.mode == "slide":
            kw.update(scales=None, flip=None)
        self.settings = kw

    def __call__(self, max_images: Optional[int]) -> EvalResult:
        from lakd.evaluation.evaluate import label_input_fn

        cfg, previews, data = self.cfg, {}, {}
        if self.noiser is not None:  # label-assisted teacher: with the label code and without it
            label = self.run(label_input_fn(self.noiser, "fixed", seed=cfg.run.seed), max_images, "label", previews,
                             data)
            image = self.run(label_input_fn(self.noiser, "zeros"), max_images, "image", previews, data)
            metrics = {"image": image, "label": label}
            score = metrics[cfg.eval.best_on]["miou"]
        else:
            metrics = {"image": self.run(None, max_images, "image", previews, data)}
            score = metrics["image"]["miou"]
        return EvalResult(metrics, float(score) if score is not None else float("-inf"), previews, data)

    def run(self, input_fn, max_images: Optional[int], variant: str, previews: dict, data: dict) -> dict:
        """One pass over the val set; ``data`` gets what the loader skipped (summed over ranks; each variant
        reads the same images, so the largest count of the passes)."""
        from lakd.data import get_card
        from lakd.data.pipeline import build_eval_loader
        from lakd.engine.progress import track
        from lakd.evaluation.evaluate import evaluate

        cfg = self.cfg
        loader = build_eval_loader(cfg.manifest("val"), rank=self.rank, world_size=self.world, mean=self.mean,
                                   std=self.std, num_workers=cfg.data.num_workers, allow_pipe=cfg.data.allow_pipe,
                                   max_pixels=cfg.data.max_pixels)
        per_rank = None if max_images is None else max(1, -(-max_images // self.world))
        total = len(loader) if per_rank is None else min(per_rank, len(loader))
        shown = track(loader, total=total, desc=f"[eval {variant}]", unit="images",
                      enabled=self.rank == 0 and cfg.log.progress != "none")
        on_pred = (PreviewCollector(previews.setdefault(variant, []), cfg.log.preview_images,
                                    get_card(cfg.data.dataset).colorize) if self.rank == 0 else None)
        with autocast_context(self.device, cfg.train.precision):
            metrics = evaluate(self.model, shown, self.num_classes, input_fn=input_fn, max_images=per_rank,
                               on_prediction=on_pred, **self.settings)
        for name, n in sum_over_ranks(data_counts(loader), self.device).items():
            data[name] = max(n, data.get(name, 0))
        if not metrics["pixels"]:  # summed over ranks: every rank takes the same decision
            raise ConfigError(f"evaluation found no readable labelled image in {cfg.manifest('val')} (missing, "
                              f"empty or corrupt val shards; lakd shards verify {cfg.manifest('val')}); a "
                              f"score over nothing is not a result")
        return metrics


@dataclass
class Exporter:
    """Writes ``<stage_dir>/<name>.safetensors`` + ``.json``: the model (with a teacher's label noiser, as a
    :class:`TeacherExport` a student stage loads) and what a user of it needs to know."""

    cfg: Config
    mean: list
    std: list
    noiser: Any = None  # a teacher's label noiser (stored with it)

    def save(self, model, name: str, step: int) -> Path:
        cfg = self.cfg
        meta = {"dataset": cfg.data.dataset, "mean": self.mean, "std": self.std, "num_classes": num_classes(cfg),
                "stage": cfg.stage, "run_name": cfg.run.name, "step": step, "config_hash": cfg.hash()}
        if cfg.data.card is not None:  # a folder dataset: its card names the classes for predict/export/eval
            meta["card"] = str(Path(cfg.data.card).absolute())
        base = StageDir.of(cfg).path / name
        # a full disk is named with the weights file (safetensors' own error names no file)
        with naming_disk_full(base.with_name(base.name + ".safetensors")):
            return TeacherExport(model, self.noiser).save(base, meta)


def load_teacher(cfg: Config, device: torch.device, mean, std, rank: int) -> tuple[TeacherExport, dict]:
    """The student stage's frozen teacher with its label noiser, and {"export", "label_channels"} (result.json)."""
    path = cfg.teacher_export()
    try:
        teacher = TeacherExport.load(path, map_location=device, default_noise=default_noise(cfg))
    except ValueError as exc:
        raise ConfigError(f"cannot load the teacher export: {exc}") from None
    for key, mine in (("mean", mean), ("std", std)):
        theirs = teacher.meta.get(key)
        if theirs is not None and [round(v, 4) for v in theirs] != [round(v, 4) for v in mine]:
            if rank == 0:
                warn(f"teacher export {path} was trained with {key} {theirs}, this stage uses {mine}")
    return teacher, {"export": str(path), "label_channels": teacher.label_channels}


# ----------------------------------------------------------------------------------------------- stage
@dataclass
class Stage:
    """The assembled parts of one stage on this process."""

    cfg: Config
    denv: D.DistEnv
    device: torch.device
    engine: Any  # the DeepSpeed engine; ``engine.module`` is the model
    scheduler: Any  # the learning-rate schedule (inside the engine's checkpoint)
    objective: Callable  # objective(model, batch, step=...) -> LossOutput
    loaders: TrainLoaderFactory
    loader: Any  # this session's training stream
    evaluator: Evaluator
    exporter: Exporter
    checkpoints: CheckpointManager
    micro: int  # micro-batch per process
    accum: int  # micro-batches per step
    sync_bn: bool
    noiser: Any = None  # teacher stage: the model's label noiser
    teacher: Optional[TeacherExport] = None  # student stage: the frozen teacher and its label noiser
    teacher_info: Optional[dict] = None  # student stage: {"export", "label_channels"} (result.json)
    init_report: Any = None  # LoadReport of model.pretrained
    class_names: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)  # the stage's own (best-model export)

    @property
    def model(self):
        return self.engine.module

    @property
    def rank(self) -> int:
        return self.denv.rank

    @property
    def world(self) -> int:
        return self.denv.world_size

    @property
    def average_bn(self) -> bool:
        """Plain BatchNorm on several processes: buffers averaged for evaluations, checkpoints and exports."""
        return self.world > 1 and not self.sync_bn


def _objective(cfg: Config, noiser, teacher: Optional[TeacherExport]):
    from lakd.method.objectives import StudentObjective, TeacherObjective

    if cfg.stage == "teacher":
        tl = cfg.teacher_loss
        return TeacherObjective(
            noiser, aux_weight=tl.aux_weight, consistency=tl.consistency, consistency_weight=tl.consistency_weight,
            temperature=tl.temperature, dual_path=tl.dual_path, consistency_warmup=tl.consistency_warmup,
            label_dropout=tl.label_dropout,
        )
    sl = cfg.student_loss
    return StudentObjective(teacher.model if teacher else None, noiser=teacher.noiser if teacher else None,
                            teacher_label_mode=sl.teacher_label_mode, aux_weight=sl.aux_weight, kd=sl.kd,
                            kd_weight=sl.kd_weight, temperature=sl.temperature)


def assemble(cfg: Config, denv: D.DistEnv, device: torch.device) -> Stage:
    """Build every part of the stage on this process (the process group is up; nothing is trained or loaded
    from a checkpoint here)."""
    from lakd.engine.ds_engine import build_engine

    rank, world = denv.rank, denv.world_size
    micro, accum = batch_layout(cfg, world)
    mean, std = normalisation(cfg)
    rng.seed_all(cfg.run.seed)  # identical initial weights on every rank
    noiser = teacher = teacher_info = None
    if cfg.stage == "teacher":
        noiser = noiser_from_config(cfg)
        model, init_report = build_model(cfg, 3 + noiser.code_dim)
    else:
        model, init_report = build_model(cfg, 3)
        if cfg.stage == "student":
            teacher, teacher_info = load_teacher(cfg, device, mean, std, rank)
    objective = _objective(cfg, noiser, teacher)
    sync_bn = batchnorm.use_sync_bn(cfg.train.sync_bn, device, world)
    if sync_bn:
        model = batchnorm.convert_sync_bn(model)
    model.to(device)
    # per-rank randomness for training (label noise, dropout); the data stream has its own seeds
    rng.seed_all(cfg.run.seed * 100003 + 7919 * (rank + 1))
    engine, scheduler = build_engine(model, cfg, world, micro, accum)
    loaders = TrainLoaderFactory(cfg, rank, world, micro, mean, std, device)
    exporter = Exporter(cfg, mean, std, noiser)
    best = StageDir.of(cfg).best_export.name
    callbacks = [ExportBest(exporter, engine.module, best, rank=rank)] if cfg.eval.every else []
    return Stage(
        cfg=cfg, denv=denv, device=device, engine=engine, scheduler=scheduler, objective=objective,
        loaders=loaders, loader=loaders(),
        evaluator=Evaluator(cfg, engine.module, rank=rank, world=world, device=device, mean=mean, std=std,
                            noiser=noiser),
        exporter=exporter, checkpoints=checkpoints_for(cfg), micro=micro, accum=accum,
        sync_bn=sync_bn, noiser=noiser, teacher=teacher, teacher_info=teacher_info, init_report=init_report,
        class_names=class_names(cfg), callbacks=callbacks,
    )
