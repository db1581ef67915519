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

import gc
import json
import logging
import os
import sys
from typing import Optional, Sequence

import torch

from lakd.config import Config, ConfigError, batch_layout
from lakd.engine import batchnorm
from lakd.engine import distributed as D
from lakd.engine.assemble import Stage, assemble, checkpoints_for, warn
from lakd.engine.callbacks import Callback, MonitorLog, registered
from lakd.engine.checkpoint import PORTABLE, rank_parts, restore
from lakd.engine.environment import check_environment, result_path
from lakd.engine.monitor import Monitor
from lakd.engine.preemption import PreemptionFlag
from lakd.engine.progress import ConsoleLog, MetricsLog, Progress, format_metric
from lakd.engine.runlock import RunLock
from lakd.engine.trainer import Trainer, TrainState, cpu_has_native_bf16, describe_skipped
from lakd.io import atomic_write_bytes
from lakd.log import setup_logging
from lakd.rundir import ResultError, StageDir

log = logging.getLogger(__name__)

__all__ = ["run_stage", "check_environment", "stage_result_path"]

stage_result_path = result_path


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


def _read_result(cfg: Config) -> Optional[dict]:
    sd = StageDir.of(cfg)
    if not sd.finished:
        return None
    try:
        result = sd.read_result()
    except ResultError as exc:  # one line naming the file; how to go on, unless the reader said it already
        text = str(exc)
        raise ConfigError(text if "remove it" in text else f"{text}; remove it to train the stage again") from None
    theirs = result.get("config_hash")
    if theirs and theirs != cfg.hash():
        raise ConfigError(
            f"{sd} holds a finished {cfg.stage} stage trained with a different configuration "
            f"(config hash {theirs}, now {cfg.hash()}); choose another run.name or remove that folder"
        )
    return result


def _pick_device(cfg: Config, denv: D.DistEnv) -> torch.device:
    device = D.pick_device(denv, cfg.train.device)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # several processes on one machine share its cores (torchrun sets 1 thread; srun/deepspeed do not)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // denv.local_world_size))
    return device


# ---------------------------------------------------------------------------------------------- resume
def resume(stage: Stage) -> TrainState:
    """Load the newest complete checkpoint (if any) into the engine and this rank's checkpoint parts (the same
    named mapping the trainer saves, :func:`lakd.engine.checkpoint.rank_parts`); return the loop's state.

    Same world size and ZeRO stage: everything, exactly. Otherwise the weights, step and schedule (plus the
    ZeRO-0 optimizer state, one unpartitioned file) and only the portable parts (the data stream's position)."""
    cfg, ckpt, engine = stage.cfg, stage.checkpoints, stage.engine
    # check_environment refused a different configuration and resume=false over existing checkpoints
    meta = ckpt.latest() if cfg.checkpoint.resume else None
    state = TrainState()
    if meta is None:
        return state
    same_world = int(meta["world_size"]) == stage.world
    same_zero = int(meta.get("zero_stage", cfg.train.zero_stage)) == cfg.train.zero_stage
    exact = same_world and same_zero
    # ZeRO-0 optimizer state is one unpartitioned file: it survives a world-size change
    module_only = not exact and not (same_zero and cfg.train.zero_stage == 0)
    saved, path = ckpt.load(engine, meta, module_only=module_only)
    state.load_state_dict(meta)
    if module_only:
        from lakd.engine.ds_engine import set_schedule_step

        set_schedule_step(engine, stage.scheduler, state.step, cfg)
    parts = rank_parts(stage.loader, stage.model, stage.average_bn)
    if exact:
        restore(parts, saved)
    else:
        old = ckpt.load_rank_state(meta["tag"], min(stage.rank, int(meta["world_size"]) - 1))
        if old is not None:
            restore(parts, old, PORTABLE)  # the stream continues at the step, new sample order
        if stage.rank == 0:
            what = (f"world size {meta['world_size']} -> {stage.world}" if not same_world else
                    f"ZeRO stage {meta.get('zero_stage')} -> {cfg.train.zero_stage}")
            momentum = "restarts from zero" if module_only else "is kept"
            warn(
                f"resuming {path} with a different set-up ({what}): weights, step {state.step} and the "
                f"learning-rate schedule are restored, the optimizer momentum {momentum}, and the data stream "
                f"continues with a different sample order. The run is not bitwise reproducible from here on."
            )
    if stage.rank == 0:
        log.info("resumed from %s (step %d)", path, state.step)
    return state


# --------------------------------------------------------------------------------------------- session
class _Session:
    """What one call of run_stage opens on this process (lock, console copy, logs, stream), closed once."""

    def __init__(self, cfg: Config, denv: D.DistEnv, device: torch.device, created_group: bool, callbacks):
        self.cfg, self.denv, self.device, self.created_group = cfg, denv, device, created_group
        self.extra_callbacks = list(callbacks)
        self.flag = PreemptionFlag().install()
        self.dir = StageDir.of(cfg)
        self.lock = RunLock(self.dir.path)
        self.console: Optional[ConsoleLog] = None
        self.loader = self.metrics = self.progress = self.monitor = None
        self.failed: Optional[BaseException] = None

    def open_run_dir(self) -> Optional[dict]:
        """Take the stage folder (one job per folder), clean up after an interrupted save, write config.yaml;
        returns the result when a run that held the folder until now finished the stage."""
        cfg, denv, sd = self.cfg, self.denv, self.dir
        refused = None
        if denv.rank == 0:  # rank 0 holds the lock, every rank learns the outcome
            sd.path.mkdir(parents=True, exist_ok=True)
            refused = self.lock.acquire()
            if self.lock.unsupported:
                warn(self.lock.unsupported)
        refused = D.broadcast_object(refused)
        if refused:
            raise ConfigError(refused)
        done = _read_result(cfg)
        if done is not None:
            return done
        if denv.rank == 0:
            self.console = ConsoleLog(sd.console_log)
            if self.device.type == "cpu" and cfg.train.precision == "bf16" and not cpu_has_native_bf16():
                warn("train.precision=bf16 on a CPU without native bfloat16 (no AVX512-BF16/AMX): autocast "
                     "emulates it, measured about 40x slower than fp32 (benchmarks/bench_precision.py compares "
                     "them here); use fp32")
            # first free the space an interrupted save took (a full disk is the usual cause), then write
            ckpt = checkpoints_for(cfg)
            removed = ckpt.remove_incomplete()
            if removed:
                warn(f"removed incomplete checkpoint(s) {', '.join(removed)} in {ckpt.dir} (a save was interrupted)")
            atomic_write_bytes(sd.config, cfg.to_yaml().encode())
            from lakd.engine.ds_engine import resolved_deepspeed_config

            ds_config = resolved_deepspeed_config(cfg, denv.world_size, *batch_layout(cfg, denv.world_size))
            atomic_write_bytes(sd.deepspeed_config, (json.dumps(ds_config, indent=1) + "\n").encode())
        D.barrier()
        return None

    def trainer(self, stage: Stage, state: TrainState) -> Trainer:
        """The loop over the assembled parts, with rank 0's logs (and the start line)."""
        cfg, denv, sd = self.cfg, self.denv, self.dir
        stage_dir = sd.path
        self.loader = stage.loader
        if denv.rank == 0:
            self.metrics = MetricsLog(sd.metrics, resume_step=state.step)
            self.progress = Progress(total=cfg.train.iters, start=state.step, desc=f"{cfg.run.name}/{cfg.stage}",
                                     mode=cfg.log.progress, print_every=cfg.log.print_every)
            start = f"resuming at step {state.step}" if state.step else _describe_init(stage.init_report)
            self.monitor = Monitor(sd.path, run_name=cfg.run.name, stage=cfg.stage, config=cfg.to_dict(),
                                   resume_step=state.step, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                                   wandb_project=cfg.log.wandb_project)
            self.progress.message(
                f"lakd train: {cfg.stage} {cfg.stage_model.name}-{cfg.stage_model.backbone} on {cfg.data.dataset}, "
                f"{denv.world_size} process(es) ({denv.launcher}, {self.device.type}), global batch "
                f"{cfg.train.batch_size} = {stage.micro} x {stage.accum} accum x {stage.world}, "
                f"{start} -> {cfg.train.iters} steps; run dir {stage_dir}"
            )
            if stage.init_report is not None and not state.step:
                self.progress.message(stage.init_report.describe())  # widened / dropped / initialised, in full
        callbacks = [*stage.callbacks]
        if self.monitor is not None:
            callbacks.append(MonitorLog(self.monitor, stage.class_names))
        return Trainer(cfg, engine=stage.engine, scheduler=stage.scheduler, objective=stage.objective,
                       loader=stage.loader, device=self.device, accum=stage.accum, ckpt=stage.checkpoints,
                       evaluate=stage.evaluator, average_bn=stage.average_bn, metrics=self.metrics,
                       progress=self.progress, flag=self.flag, state=state,
                       callbacks=callbacks + self.extra_callbacks)

    def fail(self, exc: BaseException) -> None:
        self.failed = exc
        if self.console is not None:
            self.console.close(exc)

    def close(self) -> None:
        """Close every part, the lock included, even when one fails (a full disk fails the logs' last writes);
        the first such error is raised unless the stage already failed: then the reason it stopped stands."""
        self.flag.restore()
        first = None
        for part in (self.loader, self.progress, self.metrics, self.monitor, self.console):
            try:
                if part is not None:
                    part.close()
            except Exception as exc:  # noqa: BLE001 - raised below, or the stage's own error stands
                first = first or exc
        self.lock.release()
        if self.created_group:
            D.destroy_process_group()
        sys.stderr.flush()
        if first is not None and self.failed is None:
            raise first


def _finish(stage: Stage, trainer: Trainer, progress: Optional[Progress]) -> dict:
    """Final evaluation of the averaged model, final export and result.json (written last, by rank 0)."""
    cfg, state, sd = stage.cfg, trainer.state, StageDir.of(stage.cfg)
    # final model: every rank holds the same weights and (averaged) BatchNorm statistics
    if stage.average_bn:
        batchnorm.average_(stage.model)
    final = trainer.run_eval(final=True)
    trainer.log_eval(final, final=True)
    result = {
        "stage": cfg.stage, "run_name": cfg.run.name, "dataset": cfg.data.dataset,
        "model": dict(stage.model.config), "teacher": stage.teacher_info, "steps": state.step,
        "seconds": round(state.seconds, 3), "eval": final.metrics,
        "best": state.best, "config_hash": cfg.hash(), "world_size": stage.world,
        "seed": cfg.run.seed, "init": _init_info(stage.model),
        "data": {"train": dict(trainer.data), "eval": dict(final.data)},  # skipped corrupt data (summed over ranks)
    }
    if stage.rank == 0:
        export_path = stage.exporter.save(stage.model, cfg.stage, state.step)
        result["export"] = str(export_path)
        atomic_write_bytes(sd.result, (json.dumps(result, indent=1) + "\n").encode())
        summary = ", ".join(f"{k} mIoU {format_metric(v.get('miou'))}" for k, v in final.metrics.items())
        progress.message(f"lakd train: {cfg.stage} finished at step {state.step}: {summary}; "
                         f"wrote {export_path} and {result_path(cfg)}"
                         f"{describe_skipped(trainer.data, final.data, [cfg.manifest('train'), cfg.manifest('val')])}")
    D.barrier()
    result["export"] = str(sd.export_weights)
    return result


def _say_finished(cfg: Config, done: dict) -> None:
    scores = ", ".join(f"{k} mIoU {format_metric(v.get('miou'))}" for k, v in (done.get("eval") or {}).items())
    print(f"lakd train: already finished: {result_path(cfg)}, {scores or 'no evaluation'} at step "
          f"{done.get('steps')}; nothing to do", file=sys.stderr, flush=True)


def run_stage(cfg: Config, callbacks: Sequence[Callback] = ()) -> dict:
    """Train (or resume, or just return) one stage; returns the result dict written to ``result.json``.
    ``callbacks`` (and those :func:`lakd.engine.callbacks.register` added) act at the train loop's events.

    Raises ``ConfigError`` for bad input (nothing written), ``Preempted`` after a preemption signal (every
    rank saved a checkpoint), ``NonFiniteLoss`` on a NaN/inf loss (nothing saved; the last good checkpoint
    stays), ``CheckpointError`` for an unusable checkpoint.
    """
    try:
        return _run_stage(cfg, callbacks)
    finally:
        # the stage's process group sits in reference cycles (DeepSpeed's engine and groups): collect it here,
        # where gloo's threads live. Left as garbage, a process forked later (the next stage's DataLoader
        # worker) runs its destructor on a collection and hangs waiting for threads that were not forked.
        gc.collect()


def _run_stage(cfg: Config, callbacks: Sequence[Callback]) -> dict:
    denv = D.detect()
    setup_logging(denv.rank, denv.world_size)
    warnings = check_environment(cfg, denv.world_size)
    done = _read_result(cfg)
    if done is not None:
        if denv.rank == 0:
            _say_finished(cfg, done)
        return done
    from lakd.engine.ds_engine import prepare_deepspeed

    if denv.rank == 0:
        for text in warnings:
            warn(text)
    device = _pick_device(cfg, denv)
    prepare_deepspeed(device)
    created = D.init_process_group(denv, device, backend=cfg.dist.backend, timeout_s=cfg.dist.timeout_s)
    session = _Session(cfg, denv, device, created, [*callbacks, *registered()])
    try:
        done = session.open_run_dir()
        if done is not None:
            return done
        stage = assemble(cfg, denv, device)
        session.loader = stage.loader
        trainer = session.trainer(stage, resume(stage))
        trainer.fit()
        stage.loader.close()
        return _finish(stage, trainer, session.progress)
    except BaseException as exc:
        session.fail(exc)
        raise
    finally:
        session.close()
