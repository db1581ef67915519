"""One training stage (teacher, student or baseline) from a typed config: ``run_stage(cfg) -> result``.

Usable in-process (submitit jobs call it directly) and behind ``lakd train``. Every process of the job calls
it; rank, world size and master address come from the launcher's environment (``lakd.engine.distributed``).

Stages (ARCHITECTURE.md "Stage outputs"):

- ``teacher``: a label-assisted model (``3 + noise.code_dim`` input channels) trained with the dual-path
  objective; evaluated with the fixed label code (``eval.label``) and with a zero label channel
  (``eval.image``);
- ``student``: an image-only model distilled from the frozen teacher export (``teacher.export``, default
  ``<runs_dir>/<run>/teacher/teacher.safetensors``; the KD row points it at an image-only teacher exported
  by a baseline stage of another run);
- ``baseline``: the same student objective without a teacher.

Run directory ``<runs_dir>/<run>/<stage>/``: ``config.yaml`` (resolved), ``checkpoints/``, ``metrics.jsonl``,
``<stage>.safetensors`` + ``<stage>.json`` (final weights), ``<stage>-best.*`` (best evaluation, when periodic
evaluation runs), ``result.json`` (written last; its presence means the stage is finished and a new call
returns it without training).

Resume: a stage always continues from the newest complete checkpoint of its directory. With the same world
size and ZeRO stage the continuation is exact (bitwise-identical weights to an uninterrupted run on CPU).
With a different world size (or ZeRO stage) it takes the documented *weights + schedule* path: model weights,
step, learning-rate schedule, best metric and BatchNorm statistics are restored; the optimizer momentum
restarts from zero for ZeRO 1 checkpoints (ZeRO 0 keeps it), and the data stream continues at the same
step with a different sample order. A warning says so.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from lakd.config import Config, ConfigError, batch_layout
from lakd.engine import batchnorm, rng
from lakd.engine import distributed as D
from lakd.engine.checkpoint import CheckpointManager
from lakd.engine.environment import check_environment, num_classes, result_path
from lakd.engine.preemption import PreemptionFlag
from lakd.engine.monitor import Monitor
from lakd.engine.progress import ConsoleLog, MetricsLog, Progress, format_metric
from lakd.engine.runlock import RunLock
from lakd.engine.trainer import EvalResult, Trainer, TrainState, cpu_has_native_bf16
from lakd.io import atomic_write_bytes, naming_disk_full

log = logging.getLogger("lakd.engine")

__all__ = ["run_stage", "check_environment", "stage_result_path"]

stage_result_path = result_path


def _warn(text: str) -> None:
    """A one-line warning on stderr (rank 0 decides whether to call it)."""
    print(f"lakd train: warning: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ settings
def _class_names(cfg: Config) -> list[str]:
    from lakd.data import get_card

    names = list(get_card(cfg.data.dataset).class_names)
    return names + [f"class_{c}" for c in range(len(names), num_classes(cfg))]


def _norm(cfg: Config) -> tuple[list[float], list[float]]:
    from lakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return list(cfg.data.mean or IMAGENET_MEAN), list(cfg.data.std or IMAGENET_STD)


# ---------------------------------------------------------------------------------------------- models
def _build_model(cfg: Config, in_channels: int):
    """The stage's model and, when ``pretrained`` is set, what loading it did (a LoadReport, also kept on the
    model for result.json "init"). ``pretrained`` may name a catalogue entry (lakd.models.pretrained)."""
    from lakd.models.pretrained import build_with_pretrained

    key = "teacher.model" if cfg.stage == "teacher" else "model"
    return build_with_pretrained(cfg.stage_model, num_classes=num_classes(cfg), in_channels=in_channels,
                                 weights_dir=cfg.run.weights_dir, key=key)


def _describe_init(report) -> str:
    if report is None:
        return "from scratch"
    extra = "".join(f", {len(xs)} {what}" for what, xs in (("widened", report.widened), ("ignored", report.ignored))
                    if xs)
    return f"initialised from {report.path} ({report.layout} layout, {len(report.loaded)} tensors loaded{extra})"


def _init_info(model) -> Optional[dict]:
    """Where the weights started (result.json "init"): None from scratch; else the file and whether it held the
    whole model (a fine-tuned stage, e.g. a sweep's `init_from`) or the backbone only (ImageNet weights)."""
    report = getattr(model, "load_report", None)
    if report is None:
        return None
    return {"from": str(report.path), "scope": report.scope, "layout": report.layout, "widened": list(report.widened)}


def _noiser(cfg: Config, num_classes: int, noise: Optional[dict] = None):
    from lakd.method.label_noise import LabelNoiser

    n = dict(code_dim=cfg.noise.code_dim, sigma=cfg.noise.sigma, fixed_sigma=cfg.noise.fixed_sigma,
             scale=cfg.noise.scale)
    n.update(noise or {})
    return LabelNoiser(num_classes, **n)


def _noise_meta(noiser) -> dict:
    return {"code_dim": noiser.code_dim, "sigma": noiser.sigma, "fixed_sigma": noiser.fixed_sigma,
            "scale": noiser.scale}


# ----------------------------------------------------------------------------------------------- stage
class _Stage:
    """Assembles the pieces of one stage on this process."""

    def __init__(self, cfg: Config, denv: D.DistEnv, device: torch.device):
        self.cfg, self.denv, self.device = cfg, denv, device
        self.rank, self.world = denv.rank, denv.world_size
        self.num_classes = num_classes(cfg)
        self.init_report = None  # LoadReport of model.pretrained
        self.mean, self.std = _norm(cfg)
        self.micro, self.accum = batch_layout(cfg, self.world)
        self.noiser = None  # teacher stage: the model's own label noiser
        self.teacher_info = None  # student stage: {"export", "label_channels"}

    # ---- objective + model
    def build(self):
        from lakd.method.objectives import StudentObjective, TeacherObjective

        cfg = self.cfg
        rng.seed_all(cfg.run.seed)  # identical initial weights on every rank
        if cfg.stage == "teacher":
            self.noiser = _noiser(cfg, self.num_classes)
            model, self.init_report = _build_model(cfg, 3 + self.noiser.code_dim)
            tl = cfg.teacher_loss
            objective = TeacherObjective(
                self.noiser, aux_weight=tl.aux_weight, consistency=tl.consistency,
                consistency_weight=tl.consistency_weight, temperature=tl.temperature, dual_path=tl.dual_path,
                consistency_warmup=tl.consistency_warmup, label_dropout=tl.label_dropout,
            )
        else:
            model, self.init_report = _build_model(cfg, 3)
            sl = cfg.student_loss
            teacher, noiser = None, None
            if cfg.stage == "student":
                teacher, noiser = self._load_teacher()
            objective = StudentObjective(
                teacher, noiser=noiser, teacher_label_mode=sl.teacher_label_mode, aux_weight=sl.aux_weight,
                kd=sl.kd, kd_weight=sl.kd_weight, temperature=sl.temperature,
            )
        self.sync_bn = batchnorm.use_sync_bn(cfg.train.sync_bn, self.device, self.world)
        if self.sync_bn:
            model = batchnorm.convert_sync_bn(model)
        model.to(self.device)
        # per-rank randomness for training (label noise, dropout); the data stream has its own seeds
        rng.seed_all(cfg.run.seed * 100003 + 7919 * (self.rank + 1))
        return model, objective

    def _load_teacher(self):
        from lakd.models.export import load_export

        path = self.cfg.teacher_export()
        try:
            teacher, meta = load_export(path, map_location=self.device)
        except ValueError as exc:
            raise ConfigError(f"cannot load the teacher export: {exc}") from None
        teacher.eval().requires_grad_(False)
        k = int(meta.get("label_channels", 0))
        for key, mine in (("mean", self.mean), ("std", self.std)):
            theirs = meta.get(key)
            if theirs is not None and [round(v, 4) for v in theirs] != [round(v, 4) for v in mine]:
                if self.rank == 0:
                    _warn(f"teacher export {path} was trained with {key} {theirs}, this stage uses {mine}")
        noiser = _noiser(self.cfg, self.num_classes, meta.get("noise")) if k > 0 else None
        if noiser is not None and noiser.code_dim != k:
            noiser = _noiser(self.cfg, self.num_classes, {**(meta.get("noise") or {}), "code_dim": k})
        self.teacher_info = {"export": str(path), "label_channels": k}
        return teacher, noiser

    # ---- data
    def train_loader(self, seed_offset: int = 0):
        from lakd.data.pipeline import build_train_loader
        from lakd.data.prefetch import Prefetcher

        d = self.cfg.data
        kw = {} if d.shuffle_buffer is None else {"shuffle_buffer": d.shuffle_buffer}
        stream = build_train_loader(
            self.cfg.manifest("train"), batch_size=self.micro, crop_size=tuple(d.crop_size),
            seed=self.cfg.run.seed + seed_offset, rank=self.rank, world_size=self.world,
            num_workers=d.num_workers, scale_range=tuple(d.scale_range), mean=self.mean, std=self.std,
            pin_memory=self.device.type == "cuda", num_classes=self.num_classes, allow_pipe=d.allow_pipe, **kw,
        )
        return Prefetcher(stream) if d.num_workers > 0 else stream  # hand-off off the step's critical path

    def evaluator(self, model):
        from lakd.data.pipeline import build_eval_loader
        from lakd.evaluation.evaluate import evaluate, label_input_fn

        cfg, e = self.cfg, self.cfg.eval
        crop = e.crop_size or cfg.data.crop_size
        stride = e.stride or [max(1, c * 2 // 3) for c in crop]
        kw = dict(mode=e.mode, crop_size=tuple(crop), stride=tuple(stride), scales=list(e.scales),
                  flip=e.flip, device=self.device)
        if e.mode == "whole":
            kw.update(crop_size=None, stride=None, scales=None, flip=None)
        elif e.mode == "slide":
            kw.update(scales=None, flip=None)

        from lakd.engine.progress import track

        previews: dict = {}

        def run(input_fn, max_images, variant):
            loader = build_eval_loader(cfg.manifest("val"), rank=self.rank, world_size=self.world,
                                       mean=self.mean, std=self.std, num_workers=cfg.data.num_workers,
                                       allow_pipe=cfg.data.allow_pipe)
            per_rank = None if max_images is None else max(1, -(-max_images // self.world))
            total = len(loader) if per_rank is None else min(per_rank, len(loader))
            shown = track(loader, total=total, desc=f"{time.strftime('%H:%M:%S')} [eval {variant}]",
                          unit="images", enabled=self.rank == 0 and cfg.log.progress != "none")
            on_pred = self._preview_collector(previews.setdefault(variant, [])) if self.rank == 0 else None
            with _autocast(self.device, cfg.train.precision):
                metrics = evaluate(model, shown, self.num_classes, input_fn=input_fn, max_images=per_rank,
                                   on_prediction=on_pred, **kw)
            if not metrics["pixels"]:  # summed over ranks: every rank takes the same decision
                raise ConfigError(f"evaluation found no readable labelled image in {cfg.manifest('val')} (missing, "
                                  f"empty or corrupt val shards; lakd shards verify {cfg.manifest('val')}); a "
                                  f"score over nothing is not a result")
            return metrics

        def evaluate_all(max_images: Optional[int]) -> EvalResult:
            previews.clear()
            if self.noiser is not None:  # label-assisted teacher: with the label code and without it
                label = run(label_input_fn(self.noiser, "fixed", seed=cfg.run.seed), max_images, "label")
                image = run(label_input_fn(self.noiser, "zeros"), max_images, "image")
                metrics = {"image": image, "label": label}
                score = metrics[e.best_on]["miou"]
            else:
                metrics = {"image": run(None, max_images, "image")}
                score = metrics["image"]["miou"]
            return EvalResult(metrics, float(score) if score is not None else float("-inf"), dict(previews))

        return evaluate_all

    def _preview_collector(self, out: list):
        """``on_prediction`` keeping the first ``log.preview_images`` label | prediction pairs (rank 0)."""
        from lakd.data import get_card
        from lakd.engine.monitor import preview_pair

        colorize = get_card(self.cfg.data.dataset).colorize

        def collect(keys, pred, label):
            for key, p, y in zip(keys, pred.numpy(), label.numpy()):
                if len(out) < self.cfg.log.preview_images:
                    out.append((str(key), preview_pair(y, p, colorize)))

        return collect

    # ---- exports
    def export(self, model, name: str, step: int) -> Path:
        from lakd.models.export import save_export

        meta = {"dataset": self.cfg.data.dataset, "mean": self.mean, "std": self.std,
                "num_classes": self.num_classes, "stage": self.cfg.stage, "run_name": self.cfg.run.name,
                "step": step, "config_hash": self.cfg.hash()}
        if self.noiser is not None:
            meta["label_channels"] = self.noiser.code_dim
            meta["noise"] = _noise_meta(self.noiser)
        else:
            meta["label_channels"] = 0
        st_path, _ = save_export(model, self.cfg.stage_dir / name, meta)
        return st_path


def _autocast(device: torch.device, precision: str):
    from lakd.engine.trainer import autocast_context

    return autocast_context(device, precision)


def _read_result(cfg: Config) -> Optional[dict]:
    path = stage_result_path(cfg)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); remove it to train the stage again") from None
    theirs = result.get("config_hash")
    if theirs and theirs != cfg.hash():
        raise ConfigError(
            f"{path.parent} holds a finished {cfg.stage} stage trained with a different configuration "
            f"(config hash {theirs}, now {cfg.hash()}); choose another run.name or remove that folder"
        )
    return result


def _resume(stage: _Stage, trainer_parts: dict, ckpt: CheckpointManager, cfg: Config) -> TrainState:
    """Load the newest complete checkpoint (if any) into the engine, loader and RNGs; return the state."""
    # check_environment refused a different configuration and resume=false over existing checkpoints
    meta = ckpt.latest() if cfg.checkpoint.resume else None
    if meta is None:
        return TrainState()
    engine, scheduler, loader = trainer_parts["engine"], trainer_parts["scheduler"], trainer_parts["loader"]
    same_world = int(meta["world_size"]) == stage.world
    same_zero = int(meta.get("zero_stage", cfg.train.zero_stage)) == cfg.train.zero_stage
    exact = same_world and same_zero
    # ZeRO-0 optimizer state is one unpartitioned file: it survives a world-size change
    module_only = not exact and not (same_zero and cfg.train.zero_stage == 0)
    state, path = ckpt.load(engine, meta, module_only=module_only)
    step = int(meta["step"])
    if module_only:
        from lakd.engine.ds_engine import set_schedule_step

        set_schedule_step(engine, scheduler, step, cfg)
    if exact:
        loader.load_state_dict(state["loader"])
        if state.get("buffers") is not None:
            batchnorm.restore(engine.module, state["buffers"])
        rng.restore(state["rng"])
    else:
        old = ckpt.load_rank_state(meta["tag"], min(stage.rank, int(meta["world_size"]) - 1))
        if old is not None:
            loader.load_state_dict(old["loader"])  # the stream continues at the step, new sample order
        if stage.rank == 0:
            what = (f"world size {meta['world_size']} -> {stage.world}" if not same_world else
                    f"ZeRO stage {meta.get('zero_stage')} -> {cfg.train.zero_stage}")
            momentum = "restarts from zero" if module_only else "is kept"
            _warn(
                f"resuming {path} with a different set-up ({what}): weights, step {step} and the learning-rate "
                f"schedule are restored, the optimizer momentum {momentum}, and the data stream continues "
                f"with a different sample order. The run is not bitwise reproducible from here on."
            )
    if stage.rank == 0:
        log.info("resumed from %s (step %d)", path, step)
    return TrainState(step=step, best=meta.get("best"), seconds=float(meta.get("seconds", 0.0)),
                      history=list(meta.get("history", [])), pending_eval=bool(meta.get("pending_eval")))


def run_stage(cfg: Config) -> dict:
    """Train (or resume, or just return) one stage; returns the result dict written to ``result.json``.

    Raises ``ConfigError`` for bad input (nothing written), ``Preempted`` after a preemption signal (every
    rank saved a checkpoint), ``NonFiniteLoss`` on a NaN/inf loss (nothing saved; the last good checkpoint
    stays), ``CheckpointError`` for an unusable checkpoint.
    """
    denv = D.detect()
    warnings = check_environment(cfg, denv.world_size)
    done = _read_result(cfg)
    if done is not None:
        if denv.rank == 0:
            scores = ", ".join(f"{k} mIoU {format_metric(v.get('miou'))}" for k, v in (done.get("eval") or {}).items())
            print(f"lakd train: already finished: {result_path(cfg)}, {scores or 'no evaluation'} at step "
                  f"{done.get('steps')}; nothing to do", file=sys.stderr, flush=True)
        return done
    from lakd.data.transforms import set_max_pixels

    set_max_pixels(cfg.data.max_pixels)
    if denv.rank == 0:
        for text in warnings:
            _warn(text)

    from lakd.engine.ds_engine import build_engine, prepare_deepspeed, resolved_deepspeed_config

    device = D.pick_device(denv, cfg.train.device)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # several processes on one machine share its cores (torchrun sets 1 thread; srun/deepspeed do not)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // denv.local_world_size))
    prepare_deepspeed(device)
    created = D.init_process_group(denv, device, backend=cfg.dist.backend, timeout_s=cfg.dist.timeout_s)
    flag = PreemptionFlag().install()
    loader = metrics = progress = monitor = console = None
    lock = RunLock(cfg.stage_dir)
    try:
        stage_dir = cfg.stage_dir
        ckpt = CheckpointManager(stage_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last,
                                 keep_best=cfg.checkpoint.keep_best)
        refused = None
        if denv.rank == 0:  # one job per stage folder: rank 0 holds the lock, every rank learns the outcome
            stage_dir.mkdir(parents=True, exist_ok=True)
            refused = lock.acquire()
            if lock.unsupported:
                _warn(lock.unsupported)
        refused = D.broadcast_object(refused)
        if refused:
            raise ConfigError(refused)
        done = _read_result(cfg)  # the run that held the lock until now may have finished the stage
        if done is not None:
            return done
        if denv.rank == 0:
            console = ConsoleLog(stage_dir / "console.log")
            if device.type == "cpu" and cfg.train.precision == "bf16" and not cpu_has_native_bf16():
                _warn("train.precision=bf16 on a CPU without native bfloat16 (no AVX512-BF16/AMX): autocast "
                      "emulates it, measured about 40x slower than fp32 (benchmarks/bench_precision.py compares "
                      "them here); use fp32")
            # first free the space an interrupted save took (a full disk is the usual cause), then write
            removed = ckpt.remove_incomplete()
            if removed:
                _warn(f"removed incomplete checkpoint(s) {', '.join(removed)} in {ckpt.dir} (a save was interrupted)")
            atomic_write_bytes(stage_dir / "config.yaml", cfg.to_yaml().encode())
            ds_config = resolved_deepspeed_config(cfg, denv.world_size, *batch_layout(cfg, denv.world_size))
            atomic_write_bytes(stage_dir / "deepspeed_config.json", (json.dumps(ds_config, indent=1) + "\n").encode())
        D.barrier()

        st = _Stage(cfg, denv, device)
        model, objective = st.build()
        engine, scheduler = build_engine(model, cfg, st.world, st.micro, st.accum)
        loader = st.train_loader()
        state = _resume(st, {"engine": engine, "scheduler": scheduler, "loader": loader}, ckpt, cfg)

        evaluate = st.evaluator(engine.module)
        if denv.rank == 0:
            metrics = MetricsLog(stage_dir / "metrics.jsonl", resume_step=state.step)
            progress = Progress(total=cfg.train.iters, start=state.step, desc=f"{cfg.run.name}/{cfg.stage}",
                                mode=cfg.log.progress, print_every=cfg.log.print_every)
            start = f"resuming at step {state.step}" if state.step else _describe_init(st.init_report)
            monitor = Monitor(stage_dir, run_name=cfg.run.name, stage=cfg.stage, config=cfg.to_dict(),
                              resume_step=state.step, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                              wandb_project=cfg.log.wandb_project)
            progress.message(
                f"lakd train: {cfg.stage} {cfg.stage_model.name}-{cfg.stage_model.backbone} on {cfg.data.dataset}, "
                f"{denv.world_size} process(es) ({denv.launcher}, {device.type}), global batch "
                f"{cfg.train.batch_size} = {st.micro} x {st.accum} accum x {st.world}, "
                f"{start} -> {cfg.train.iters} steps; run dir {stage_dir}"
            )
            if st.init_report is not None and not state.step:
                progress.message(st.init_report.describe())  # widened / dropped / initialised, in full
        average_bn = st.world > 1 and not st.sync_bn

        def on_best(step: int) -> None:
            if denv.rank == 0:
                with naming_disk_full(stage_dir / f"{cfg.stage}-best.safetensors"):
                    st.export(engine.module, f"{cfg.stage}-best", step)

        trainer = Trainer(cfg, engine=engine, scheduler=scheduler, objective=objective, loader=loader,
                          device=device, accum=st.accum, ckpt=ckpt, evaluate=evaluate, average_bn=average_bn,
                          metrics=metrics, progress=progress, flag=flag, state=state,
                          on_best=on_best if cfg.eval.every else None, monitor=monitor,
                          class_names=_class_names(cfg))
        trainer.fit()
        loader.close()

        # final model: every rank holds the same weights and (averaged) BatchNorm statistics
        if average_bn:
            batchnorm.average_(engine.module)
        final = trainer.run_eval(final=True)
        trainer._log_eval(final)
        result = {
            "stage": cfg.stage, "run_name": cfg.run.name, "dataset": cfg.data.dataset,
            "model": dict(engine.module.config), "teacher": st.teacher_info, "steps": state.step,
            "seconds": round(state.seconds, 3), "eval": final.metrics,
            "best": state.best, "config_hash": cfg.hash(), "world_size": st.world,
            "seed": cfg.run.seed, "init": _init_info(engine.module),
        }
        if denv.rank == 0:
            with naming_disk_full(stage_dir / f"{cfg.stage}.safetensors"):
                export_path = st.export(engine.module, cfg.stage, state.step)
            result["export"] = str(export_path)
            atomic_write_bytes(result_path(cfg), (json.dumps(result, indent=1) + "\n").encode())
            summary = ", ".join(f"{k} mIoU {format_metric(v.get('miou'))}" for k, v in final.metrics.items())
            progress.message(f"lakd train: {cfg.stage} finished at step {state.step}: {summary}; "
                             f"wrote {export_path} and {result_path(cfg)}")
        D.barrier()
        result["export"] = str(cfg.stage_dir / f"{cfg.stage}.safetensors")
        return result
    except BaseException as exc:
        if console is not None:
            console.close(exc)
        raise
    finally:
        flag.restore()
        if loader is not None:
            loader.close()
        if progress is not None:
            progress.close()
        if metrics is not None:
            metrics.close()
        if monitor is not None:
            monitor.close()
        if console is not None:
            console.close()
        lock.release()
        if created:
            D.destroy_process_group()
        sys.stderr.flush()
