"""The train loop of one stage: steps, per-step agreement between ranks, evaluation, checkpoints, resume.

One *step* is one optimizer update on one global batch (``grad_accum`` micro-batches per process). At the
end of every step the ranks exchange one small tensor (sum all-reduce): the preemption flag, a non-finite
loss flag and the loss terms. That single collective makes every rank take the same decision (stop for
preemption, stop on NaN/inf) at the same step, and gives the logged losses averaged over ranks.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

from lakd.config import Config
from lakd.engine import batchnorm
from lakd.engine import distributed as D
from lakd.engine.callbacks import emit
from lakd.engine.checkpoint import CheckpointManager, capture, rank_parts
from lakd.engine.preemption import Preempted, PreemptionFlag
from lakd.engine.progress import MetricsLog, Progress, format_metric, memory_fields
from lakd.exit_codes import DIVERGED as EXIT_DIVERGED  # the name launchers import from here


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf; training stopped without saving (the last good checkpoint is kept)."""

    exit_status = EXIT_DIVERGED


@dataclass
class EvalResult:
    metrics: dict  # {"image": {...}} (+ {"label": {...}} for a label-assisted teacher)
    score: float  # the value best-model tracking compares
    previews: dict = field(default_factory=dict)  # {variant: [(key, HxWx3 uint8 label | prediction)]} (rank 0)
    data: dict = field(default_factory=dict)  # what the loader skipped, summed over ranks (DATA_COUNTERS)


# what the loaders skipped (lakd.data.corrupt): corrupt samples and shards cut short
DATA_COUNTERS = ("corrupt", "truncated_shards")


def data_counts(loader) -> dict:
    """This rank's skipped-data counts of a loader with ``stats`` (zeros for one without, e.g. a test fake)."""
    stats = getattr(loader, "stats", None) or {}
    return {c: int(stats.get(c, 0)) for c in DATA_COUNTERS}


def sum_over_ranks(counts: dict, device: torch.device) -> dict:
    """``counts`` (name -> int) summed over the process group (a collective: every rank calls it)."""
    if D.world_size() == 1:
        return dict(counts)
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    vec = torch.tensor([float(v) for v in counts.values()], dtype=torch.float64, device=on)
    dist.all_reduce(vec)
    return {k: int(v) for k, v in zip(counts, vec.tolist())}


def describe_skipped(train: dict, evaluation: dict, manifests: Sequence = ()) -> str:
    """'' when nothing was skipped; else the clause the final line of a stage carries."""
    parts = [f"{n} {what}" for n, what in (
        (train.get("corrupt", 0), "corrupt training sample(s)"),
        (train.get("truncated_shards", 0), "unreadable training shard read(s)"),
        (evaluation.get("corrupt", 0), "corrupt evaluation image(s)"),
        (evaluation.get("truncated_shards", 0), "unreadable evaluation shard read(s)")) if n]
    verify = "; ".join(f"lakd shards verify {m}" for m in manifests) or "lakd shards verify MANIFEST"
    return f"; skipped {', '.join(parts)} (named in the warnings; {verify})" if parts else ""


@dataclass
class TrainState:
    step: int = 0
    best: Optional[dict] = None  # {"step", "score"} of the best periodic evaluation
    seconds: float = 0.0  # training wall time over all sessions of this stage
    history: list = field(default_factory=list)  # periodic evaluations: [{"step", "score"}]
    pending_eval: bool = False  # preempted at an evaluation step before evaluating

    def state_dict(self) -> dict:
        """The loop's position (rank 0 writes it into the checkpoint's lakd_meta.json)."""
        return {"step": self.step, "best": self.best, "seconds": self.seconds, "history": list(self.history),
                "pending_eval": self.pending_eval}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.best = state.get("best")
        self.seconds = float(state.get("seconds", 0.0))
        self.history = list(state.get("history", []))
        self.pending_eval = bool(state.get("pending_eval"))


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 (or AMX): bf16 autocast is about as fast as fp32 there (0.94x measured with AMX,
    benchmarks/bench_precision.py); without it, oneDNN emulates bf16 and it was about 40x slower."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":  # the model's weights are fp16 (DeepSpeed's fp16 block): evaluation feeds it fp16
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


class Trainer:
    """Runs the loop for an assembled stage (see :mod:`lakd.engine.assemble`); ``callbacks`` act at its events
    (:mod:`lakd.engine.callbacks`)."""

    def __init__(self, cfg: Config, *, engine, scheduler, objective: Callable, loader, device: torch.device,
                 accum: int, ckpt: CheckpointManager, evaluate: Callable[[Optional[int]], EvalResult],
                 average_bn: bool, metrics: Optional[MetricsLog], progress: Optional[Progress],
                 flag: PreemptionFlag, state: TrainState, callbacks: Sequence = ()):
        self.cfg = cfg
        self.engine, self.scheduler, self.objective = engine, scheduler, objective
        self.loader, self.device, self.accum = loader, device, accum
        self.ckpt, self.evaluate, self.average_bn = ckpt, evaluate, average_bn
        self.metrics, self.progress, self.flag, self.state = metrics, progress, flag, state
        self.callbacks = list(callbacks)
        self.data_seconds = 0.0  # of the last step: waiting for batches
        self.world = D.world_size()
        self.rank = D.rank()
        self._autocast = lambda: autocast_context(device, cfg.train.precision)
        self._keys: Optional[list[str]] = None
        self.data = data_counts(loader)  # skipped by the training stream, summed over ranks at every step

    # ------------------------------------------------------------------------------------------ step
    def _to_device(self, batch: dict) -> dict:
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items()}

    def train_step(self, step: int) -> tuple[torch.Tensor, list[str]]:
        """One optimizer step; returns (sum over micro-batches of [loss, *terms], term names)."""
        acc = None
        self.data_seconds = 0.0
        for _ in range(self.accum):
            t = time.perf_counter()
            # the loader keeps out of torch's global RNG itself (its workers are seeded by a generator of its own)
            batch = self._to_device(next(self.loader))
            self.data_seconds += time.perf_counter() - t
            with self._autocast():
                out = self.objective(self.engine, batch, step=step)
            self.engine.backward(out.loss)
            self.engine.step()
            if self._keys is None:
                self._keys = sorted(out.terms)
            vec = torch.stack([out.loss.detach().float()] + [out.terms[k].float() for k in self._keys])
            acc = vec if acc is None else acc + vec
        return acc / self.accum, self._keys

    def _loss_scale(self) -> dict:
        """fp16: DeepSpeed's dynamic loss scale and how many steps it skipped on overflow."""
        if self.cfg.train.precision != "fp16":
            return {}
        scale = getattr(self.engine.optimizer, "cur_scale", None)
        if scale is None:
            scale = getattr(self.engine.optimizer, "loss_scale", None)
        return {"loss_scale": float(scale) if scale is not None else None,
                "skipped_steps": int(getattr(self.engine, "skipped_steps", 0))}

    def _agree(self, values: torch.Tensor) -> tuple[bool, bool, list[float]]:
        """All-reduce [preempt, nonfinite, skipped data counts, loss, terms...]: the same decision on every rank
        (the counts, summed, go to ``self.data``)."""
        nonfinite = (~torch.isfinite(values)).any().float().reshape(1)
        flag = torch.tensor([1.0 if self.flag.requested else 0.0], device=values.device)
        mine = data_counts(self.loader)
        skipped = torch.tensor([float(mine[c]) for c in DATA_COUNTERS], device=values.device)
        vec = torch.cat([flag, nonfinite, skipped, torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)])
        if self.world > 1:
            vec = vec.to(self._comm_device())
            dist.all_reduce(vec)
        out = vec.tolist()
        k = 2 + len(DATA_COUNTERS)
        self.data = {c: int(round(v)) for c, v in zip(DATA_COUNTERS, out[2:k])}
        n = float(self.world)
        return out[0] > 0, out[1] > 0, [v / n for v in out[k:]]

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------------------------ checkpoint
    def parts(self) -> dict:
        """This rank's checkpoint parts beside the engine (:func:`lakd.engine.checkpoint.rank_parts`)."""
        return rank_parts(self.loader, self.engine.module, self.average_bn)

    def save(self, *, is_best: bool = False) -> str:
        st = self.state
        rank_state = capture(self.parts())  # this rank's own BatchNorm buffers, before averaging
        meta = {**st.state_dict(), "config_hash": self.cfg.hash(), "zero_stage": self.cfg.train.zero_stage}
        with batchnorm.averaged_buffers(self.engine.module, self.average_bn):
            tag = self.ckpt.save(self.engine, st.step, rank_state=rank_state, meta=meta, is_best=is_best,
                                 on_written=self._checkpoint_written)
        emit(self.callbacks, "on_checkpoint_saved", self, st.step, tag, is_best)
        return tag

    def _checkpoint_written(self, path) -> None:
        emit(self.callbacks, "on_checkpoint_written", self, self.state.step, path)

    # ------------------------------------------------------------------------------------------ eval
    def run_eval(self, final: bool = False) -> EvalResult:
        max_images = None if final else self.cfg.eval.max_images
        devices = [self.device] if self.device.type == "cuda" else []
        with batchnorm.averaged_buffers(self.engine.module, self.average_bn), \
                torch.random.fork_rng(devices=devices):
            return self.evaluate(max_images)

    def log_eval(self, res: EvalResult, *, final: bool = False) -> None:
        """Record an evaluation: metrics.jsonl and the console (rank 0), then the ``on_eval`` callbacks."""
        if self.metrics is not None:
            self.metrics.write({"step": self.state.step, "eval": res.metrics, "data": res.data, "time": time.time()})
        if self.progress is not None:
            parts = ", ".join(f"{k} mIoU {format_metric(v.get('miou'))}" for k, v in res.metrics.items())
            self.progress.message(f"[eval] step {self.state.step}: {parts}")
        emit(self.callbacks, "on_eval", self, self.state.step, res, final)

    def eval_step(self) -> bool:
        """Periodic evaluation at the current step with best-model tracking; True if it is a new best."""
        st = self.state
        with (self.progress.paused() if self.progress is not None else contextlib.nullcontext()):
            res = self.run_eval()
        self.log_eval(res)
        st.history.append({"step": st.step, "score": res.score})
        is_best = st.best is None or res.score > st.best["score"]
        if is_best:
            st.best = {"step": st.step, "score": res.score}
            with batchnorm.averaged_buffers(self.engine.module, self.average_bn):
                emit(self.callbacks, "on_best", self, st.step)
        self.engine.train()
        return is_best

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> None:
        cfg, st = self.cfg, self.state
        iters = cfg.train.iters
        ev_every, ck_every, log_every = cfg.eval.every, cfg.checkpoint.every, cfg.log.every
        global_batch = cfg.train.batch_size
        if st.pending_eval:  # the run was preempted at an evaluation step before it could evaluate
            if self.eval_step() and self.rank == 0:
                self.ckpt.mark_best(st.step)
            st.pending_eval = False
        self.engine.train()
        t_session = time.time()
        while st.step < iters:
            t0 = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]
            emit(self.callbacks, "on_step_start", self, st.step)
            values, keys = self.train_step(st.step)
            emit(self.callbacks, "on_step_computed", self, st.step, values)
            preempt, nonfinite, means = self._agree(values)
            st.step += 1
            dt = time.perf_counter() - t0
            if nonfinite:
                # every rank took this branch (the flag was all-reduced): meet once more so that no rank
                # tears the process group down while a peer still talks on it
                D.barrier()
                good = self.ckpt.latest()
                where = (f"the last good checkpoint is {self.ckpt.dir / good['tag']}" if good
                         else "no checkpoint was saved yet")
                raise NonFiniteLoss(
                    f"non-finite loss at step {st.step} (loss terms on some rank are NaN/inf); training stopped "
                    f"without saving: {where}. Lower optim.lr or set train.grad_clip, then run again (it "
                    f"resumes from that checkpoint)."
                )
            loss, terms = means[0], dict(zip(keys, means[1:]))
            emit(self.callbacks, "on_step_end", self, st.step, loss, terms)
            if self.rank == 0:
                memory = memory_fields(self.device)
                data_s = self.data_seconds
                if st.step % log_every == 0:
                    record = {"step": st.step, "lr": lr, "loss": loss, "terms": terms,
                              "images_per_s": global_batch / dt if dt > 0 else None,
                              "data_s": round(data_s, 6), "compute_s": round(dt - data_s, 6),
                              **memory, **self._loss_scale(), "data": dict(self.data), "time": time.time()}
                    if self.metrics is not None:
                        self.metrics.write(record)
                    emit(self.callbacks, "on_log", self, st.step, record)
                if self.progress is not None:
                    mem = memory.get("gpu_mem_mb", memory["max_rss_mb"])
                    self.progress.update(st.step, {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}",
                                                   "data": f"{data_s:.3f}s", "compute": f"{dt - data_s:.3f}s",
                                                   "mem": f"{mem:.0f}MB"})
            is_best = False
            if ev_every and st.step % ev_every == 0 and st.step < iters:
                if preempt:
                    st.pending_eval = True  # no time for it now: the resumed run evaluates this step first
                else:
                    is_best = self.eval_step()
            if preempt or is_best or st.step % ck_every == 0 or st.step == iters:
                st.seconds += time.time() - t_session
                t_session = time.time()
                tag = self.save(is_best=is_best)
                if preempt:
                    raise Preempted(st.step, self.flag.signum, str(self.ckpt.dir / tag))
        st.seconds += time.time() - t_session

