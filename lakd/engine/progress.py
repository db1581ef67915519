"""What a running stage tells people: ``metrics.jsonl`` (machines) and a progress display (humans), rank 0 only.

``metrics.jsonl`` gets one JSON object per logged step (``step, lr, loss, terms, images_per_s, data_s,
compute_s, max_rss_mb, time``, plus ``gpu_mem_mb`` on GPUs; ``data_s`` is the time spent waiting for
batches, ``compute_s`` the rest of the step) and one per evaluation (``step, eval``). On a resumed run, lines of
steps after the resume point (written before the interruption but not covered by the checkpoint) are
dropped first, so the file reads like one uninterrupted run.

On a terminal the display is a tqdm bar; otherwise (Slurm logs, CI) a plain line every ``print_every`` steps.
Lines go through the ``lakd`` logger (``lakd.log``: one format, rank 0 only, copied into ``console.log``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from lakd.io import atomic_write_text
from lakd.log import ConsoleLog, format_line, write_line  # noqa: F401 (ConsoleLog: its former home)

log = logging.getLogger(__name__)


def max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class MetricsLog:
    """Append-only JSONL, flushed per line. Only rank 0 creates one."""

    def __init__(self, path: Path, *, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        self._f = open(self.path, "a", buffering=1)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
                keep.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        try:
            self._f.write(json.dumps(_clean(record)) + "\n")
        except OSError as exc:  # a full disk: name the file (a file object's errors name none)
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc

    def close(self) -> None:
        self._f.close()


class Progress:
    """tqdm bar on a terminal, plain periodic lines otherwise, nothing when ``mode == "none"``.

    Plain lines start with the wall-clock time and carry what ``update`` is given (loss, lr, data / compute
    seconds of the step, memory). The rate and ETA count training time only: ``paused()`` wraps evaluations.
    Lines and messages go to the ``lakd`` logger; a ``stream`` given here (tests, benchmarks) gets them instead.
    """

    def __init__(self, *, total: int, start: int, desc: str, mode: str = "auto", print_every: int = 50,
                 stream=None):
        self._own_stream = stream is not None
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self.total, self.desc, self.print_every = total, desc, max(1, print_every)
        self._bar = None
        self._t0 = time.time()
        self._paused_s = 0.0
        self._start = start
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=desc, file=self.stream, dynamic_ncols=True,
                             unit="step")

    def train_seconds(self) -> float:
        return time.time() - self._t0 - self._paused_s

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside (evaluations) does not count towards the rate and the ETA."""
        t = time.time()
        try:
            yield
        finally:
            self._paused_s += time.time() - t
            if self._bar is not None:
                self._bar.unpause()

    def update(self, step: int, info: dict) -> None:
        if self.mode == "bar":
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(info, refresh=False)
        elif self.mode == "plain" and (step % self.print_every == 0 or step == self.total):
            elapsed = self.train_seconds()
            rate = (step - self._start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            fields = " ".join(f"{k} {v}" for k, v in info.items())
            self.message(f"{self.desc} step {step}/{self.total} {fields} | {rate:.2f} step/s, eta {_hms(eta)}")

    def message(self, text: str) -> None:
        if self.mode == "none":
            return
        if self._own_stream:
            write_line(format_line(text), self.stream)
        else:
            log.info(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def memory_fields(device: torch.device) -> dict:
    out = {"max_rss_mb": round(max_rss_mb(), 1)}
    if device.type == "cuda":
        out["gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def format_metric(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def track(iterable, *, total: Optional[int], desc: str, unit: str = "it", enabled: bool = True, stream=None,
          every_s: float = 10.0):
    """Yield from ``iterable`` showing progress on ``stream`` (stderr): a tqdm bar on a terminal, otherwise a
    plain line at most every ``every_s`` seconds and at the end (``desc: n/total unit (p%), rate, eta``), through
    the ``lakd`` logger unless a ``stream`` is given."""
    own_stream = stream is not None
    stream = stream or sys.stderr
    if not enabled:
        yield from iterable
        return
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
        return
    t0 = last = time.monotonic()
    n = 0
    for item in iterable:
        yield item
        n += 1
        now = time.monotonic()
        if now - last >= every_s or (total is not None and n == total):
            last = now
            rate = n / max(now - t0, 1e-9)
            if total:
                eta = (total - n) / rate if rate > 0 else float("nan")
                where = f"{n}/{total} {unit} ({100 * n / total:.0f}%)"
                tail = f", eta {_hms(eta)}"
            else:
                where, tail = f"{n} {unit}", ""
            line = f"{desc}: {where}, {rate:.2f} {unit}/s{tail}"
            if own_stream:
                write_line(format_line(line), stream)
            else:
                log.info(line)
