"""Training monitors beside ``metrics.jsonl`` (rank 0 only): TensorBoard event files and, when asked, W&B.

- TensorBoard (``log.tensorboard: true``, the default): event files in ``<stage dir>/tensorboard/``, written with
  tensorboardX (a 0.7 MB package plus protobuf; ``torch.utils.tensorboard`` would need the ``tensorboard``
  package, about 57 MB more with grpc and its data server). ``tensorboard --logdir runs/`` shows every stage of
  every run. Scalars: ``train/loss`` and each loss term, ``train/lr``, ``perf/images_per_s``, ``perf/data_s``,
  ``perf/compute_s``, ``memory/*_mb``; every evaluation's ``eval/<variant>/mIoU`` (+ ``mIoU_all``, ``aAcc``,
  ``mAcc``, in percent) and ``eval/<variant>/IoU/<class>``; images: ``eval/<variant>/<key>``, a few validation
  predictions (label | prediction in the dataset palette). On resume, events after the resume step left by
  the interrupted session are purged, as ``metrics.jsonl`` is truncated.
- W&B (``log.wandb: true``): the same scalars and images, when the ``wandb`` package is installed (it is not a
  dependency); the run resumes under a stable id derived from the stage directory.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

EVAL_KEYS = (("miou", "mIoU"), ("miou_all", "mIoU_all"), ("acc", "aAcc"), ("macc", "mAcc"))


def wandb_missing() -> Optional[str]:
    """Why W&B cannot be used here, or None."""
    if importlib.util.find_spec("wandb") is None:
        return "the wandb package is not installed (pip install wandb)"
    return None


def step_scalars(record: dict) -> dict[str, float]:
    """A ``metrics.jsonl`` step record as flat scalar tags."""
    out = {"train/loss": record.get("loss"), "train/lr": record.get("lr")}
    out.update({f"train/{k}": v for k, v in (record.get("terms") or {}).items()})
    for key in ("images_per_s", "data_s", "compute_s"):
        out[f"perf/{key}"] = record.get(key)
    for key in ("max_rss_mb", "gpu_mem_mb"):
        out[f"memory/{key}"] = record.get(key)
    for key in ("loss_scale", "skipped_steps"):  # fp16
        out[f"fp16/{key}"] = record.get(key)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def eval_scalars(metrics: dict, class_names: list[str]) -> dict[str, float]:
    """``{variant: metrics}`` of one evaluation as flat scalar tags, in percent."""
    out = {}
    for variant, m in metrics.items():
        for key, tag in EVAL_KEYS:
            if m.get(key) is not None:
                out[f"eval/{variant}/{tag}"] = 100.0 * float(m[key])
        for c, iou in enumerate(m.get("iou") or []):
            if iou is not None:
                name = class_names[c] if c < len(class_names) else f"class_{c}"
                out[f"eval/{variant}/IoU/{name}"] = 100.0 * float(iou)
    return out


class Monitor:
    def __init__(self, stage_dir: Path, *, run_name: str, stage: str, config: dict, resume_step: int,
                 tensorboard: bool = True, wandb: bool = False, wandb_project: str = "lakd"):
        self._tb = self._wandb = None
        self._events = _GuardedEvents(None)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step: TensorBoard hides what an interrupted session logged after the checkpoint it resumed
            # the suffix: two sessions started within one second (a quick requeue) must not share a file name
            self._tb = SummaryWriter(str(Path(stage_dir) / "tensorboard"),
                                     purge_step=resume_step + 1 if resume_step else None, flush_secs=30,
                                     filename_suffix=f".{os.getpid()}.{time.time_ns()}")
            self._events = _GuardedEvents.install(self._tb)
        if wandb:
            import wandb as wandb_module

            run_id = hashlib.sha256(str(Path(stage_dir).resolve()).encode()).hexdigest()[:16]
            self._wandb = wandb_module.init(project=wandb_project, name=f"{run_name}/{stage}", id=run_id,
                                            resume="allow", dir=str(stage_dir), config=config)
            self._wandb_module = wandb_module

    def log_step(self, step: int, record: dict) -> None:
        self._events.raise_failure()
        self._scalars(step, step_scalars(record))

    def log_eval(self, step: int, metrics: dict, class_names: list[str], previews: dict) -> None:
        self._events.raise_failure()
        self._scalars(step, eval_scalars(metrics, class_names))
        for variant, items in previews.items():
            for key, image in items:
                tag = f"eval/{variant}/{key}"
                if self._tb is not None:
                    self._tb.add_image(tag, np.asarray(image), step, dataformats="HWC")
                if self._wandb is not None:
                    self._wandb.log({tag: self._wandb_module.Image(np.asarray(image))}, step=step)
        if self._tb is not None:
            self._tb.flush()
        self._events.raise_failure()

    def _scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, step)
        if self._wandb is not None and scalars:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
            self._events.raise_failure()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


class _GuardedEvents:
    """Stands in for tensorboardX's event-file writer, which its own thread writes to: a failed write (a full
    disk) would kill that thread with a traceback, and the next ten events would then block training for
    good. The first error is kept instead (later writes are dropped) and raised in the training process by
    :meth:`raise_failure`, naming the event file, so the run stops with one line like any other failed write."""

    def __init__(self, events):
        self._events, self.error = events, None

    @classmethod
    def install(cls, writer) -> "_GuardedEvents":
        events = writer._get_file_writer().event_writer  # tensorboardX 2.6: the writer and its thread's copy
        guard = cls(events._ev_writer)
        events._ev_writer = events._worker._record_writer = guard
        return guard

    def _guarded(self, name: str, *args):
        if self.error is None:
            try:
                return getattr(self._events, name)(*args)
            except OSError as exc:
                self.error = exc
        return None

    def write_event(self, event):
        return self._guarded("write_event", event)

    def flush(self):
        return self._guarded("flush")

    def close(self):
        try:
            self._events.close()
        except OSError as exc:
            self.error = self.error or exc

    def __getattr__(self, name):
        return getattr(self._events, name)

    def raise_failure(self) -> None:
        exc = self.error
        if exc is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), getattr(self._events, "_file_name", None))


def preview_pair(label: np.ndarray, pred: np.ndarray, colorize) -> np.ndarray:
    """``label | prediction`` side by side in the palette (HxWx3 uint8), a 2-pixel white gap between them."""
    h = label.shape[0]
    gap = np.full((h, 2, 3), 255, dtype=np.uint8)
    return np.concatenate([colorize(label), gap, colorize(pred)], axis=1)
