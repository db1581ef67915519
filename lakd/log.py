"""What lakd says on the console, in one place: stdlib logging under the ``lakd`` logger, one format, rank 0
speaks, and a copy of the console in the run directory.

- Modules log through ``logging.getLogger(__name__)`` (the ``lakd.*`` hierarchy).
- :func:`setup_logging` (called by the ``lakd`` command and by ``run_stage``) gives ``lakd`` its one handler:
  lines ``HH:MM:SS message`` on the current ``sys.stderr``, written above a tqdm bar when one is showing.
- :class:`RankFilter`: info lines from global rank 0 only; warnings and errors from every rank, prefixed with
  the rank when the job has several (``HH:MM:SS [rank 1] message``), so a multi-process log says who spoke.
- :class:`ConsoleLog` copies everything the console of this process shows (log lines, other libraries'
  prints, the command's final error line, a traceback) into ``<stage dir>/console.log``: launchers such as
  torchrun do not keep the console. Under the ``lakd`` command (:func:`keep_console`) the copy stays open
  until the command has printed its last line.
- :func:`quiet_deepspeed`: DeepSpeed's own logger is kept to warnings, without the ones lakd causes on purpose.

Without :func:`setup_logging` (lakd used as a library) Python's logging defaults apply: warnings reach stderr,
info lines are the application's business.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Optional

ROOT = "lakd"
FORMATTER = logging.Formatter("%(asctime)s %(rank_prefix)s%(message)s", "%H:%M:%S", defaults={"rank_prefix": ""})


def _env_int(key: str, default: int) -> int:
    try:
        return int(os.environ.get(key, default))
    except ValueError:
        return default


class RankFilter(logging.Filter):
    """Info and below from global rank 0 only; warnings and errors from every rank, ``[rank R] `` in front
    when the job has several ranks. ``rank``/``world_size`` None: read ``RANK``/``WORLD_SIZE`` from the
    environment at each record (the launcher's, or what ``lakd.engine.distributed.export`` wrote)."""

    def __init__(self, rank: Optional[int] = None, world_size: Optional[int] = None):
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def where(self) -> tuple[int, int]:
        rank = self.rank if self.rank is not None else _env_int("RANK", 0)
        world = self.world_size if self.world_size is not None else _env_int("WORLD_SIZE", 1)
        return rank, world

    def filter(self, record: logging.LogRecord) -> bool:
        rank, world = self.where()
        if record.levelno < logging.WARNING:
            record.rank_prefix = ""
            return rank == 0
        record.rank_prefix = f"[rank {rank}] " if world > 1 else ""
        return True


def write_line(text: str, stream) -> None:
    """One console line on ``stream``; above the tqdm bars when some are showing (they are redrawn below)."""
    tq = sys.modules.get("tqdm")
    bars = getattr(getattr(tq, "tqdm", None), "_instances", ())
    if bars:
        tq.tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
    stream.flush()


class ConsoleHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is at each record, so a :class:`ConsoleLog` copy (and a test's capture)
    sees every line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record), sys.stderr)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def setup_logging(rank: Optional[int] = None, world_size: Optional[int] = None) -> logging.Logger:
    """Give the ``lakd`` logger its console handler (once per process) and level INFO (unless a level was set
    on it before); ``rank``/``world_size`` fix who speaks (None: from the environment, see :class:`RankFilter`).
    Records still propagate to the root logger, so an application's (or pytest's) handlers see them too."""
    logger = logging.getLogger(ROOT)
    handler = next((h for h in logger.handlers if isinstance(h, ConsoleHandler)), None)
    if handler is None:
        handler = ConsoleHandler()
        handler.setFormatter(FORMATTER)
        handler.addFilter(RankFilter())
        logger.addHandler(handler)
    for f in handler.filters:
        if isinstance(f, RankFilter):
            f.rank, f.world_size = rank, world_size
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def format_line(text: str) -> str:
    """``text`` as the console shows an info line, for a display given a stream of its own (tests, benchmarks)."""
    return FORMATTER.format(logging.makeLogRecord({"msg": text, "levelno": logging.INFO, "levelname": "INFO"}))


# ------------------------------------------------------------------------------------------ DeepSpeed
class _QuietDeepSpeed(logging.Filter):
    """Drop DeepSpeed warnings that lakd's set-up triggers on purpose (torch SGD under ZeRO is fine), and its
    own line about a checkpoint folder it could not make: lakd says it once, naming the folder and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "untested optimizer" not in text and "Failed saving model checkpoint" not in text


def quiet_deepspeed() -> None:
    """DeepSpeed's logger (its own handler, every rank) at WARNING, minus what lakd causes on purpose. Call it
    after ``import deepspeed``: the import sets the logger's level."""
    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _QuietDeepSpeed) for f in logger.filters):
        logger.addFilter(_QuietDeepSpeed())
    # DeepSpeed's ZeRO still calls the deprecated name; nothing for a user to act on
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)


# ---------------------------------------------------------------------------------------- console.log
class _Tee:
    """A text stream that also copies to a file what a reader of the file wants: no tqdm redraws."""

    def __init__(self, stream, file):
        self._stream, self._file = stream, file
        self._redraw = False

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if "\r" in text:
            self._redraw = True  # a bar redraw: the terminal's business
        elif not (self._redraw and text == "\n"):
            self._copy("write", text)
            self._redraw = False
        return n

    def _copy(self, what: str, *args) -> None:
        # a copy that cannot be written (a full disk) is dropped, never raised from a print: the console still
        # shows everything, and the run's own next write names the file and stops it
        if self._file.closed:
            return
        try:
            getattr(self._file, what)(*args)
        except OSError:
            with contextlib.suppress(OSError):
                self._file.close()

    def flush(self) -> None:
        self._stream.flush()
        self._copy("flush")

    def __getattr__(self, name):  # isatty, fileno, encoding, ... of the real stream
        return getattr(self._stream, name)


_kept: list["ConsoleLog"] = []  # copies closed under keep_console, closed for real when the command ends
_keeping = 0


class ConsoleLog:
    """Copy this process's stdout and stderr into ``path`` (appending: resumed sessions follow each other).

    ``close(exc)`` after a failure writes the exception's traceback and a ``stopped by`` line. Under
    :func:`keep_console` (the ``lakd`` command) closing waits for the command's end, so the file also gets the
    command's final line, or the traceback of an exception that ends it."""

    def __init__(self, path: Path):
        _close_kept(None)  # a new stage's copy: the previous one's lines are complete
        self.path = Path(path)
        self._file = open(self.path, "a", buffering=1)
        self._saved = (sys.stdout, sys.stderr)
        try:
            self._file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        except OSError as exc:  # a full disk before the run starts: name the file
            with contextlib.suppress(OSError):
                self._file.close()
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc
        sys.stdout, sys.stderr = _Tee(sys.stdout, self._file), _Tee(sys.stderr, self._file)

    def close(self, exc: Optional[BaseException] = None) -> None:
        if self._file.closed or self in _kept:
            return
        if _keeping:
            _kept.append(self)  # the command prints its last line (or a traceback) first
            return
        self._finish(exc)

    def _finish(self, exc: Optional[BaseException]) -> None:
        if self._file.closed:
            return
        sys.stdout, sys.stderr = self._saved
        with contextlib.suppress(OSError):  # a full disk: the console showed it all
            if exc is not None:
                if exc.__traceback__ is not None:
                    self._file.write("".join(traceback.format_exception(exc)))
                self._file.write(f"{time.strftime('%H:%M:%S')} stopped by {type(exc).__name__}: {exc}\n")
        with contextlib.suppress(OSError):
            self._file.close()


def _close_kept(exc: Optional[BaseException]) -> None:
    while _kept:
        _kept.pop()._finish(exc)


@contextlib.contextmanager
def keep_console():
    """Around a whole ``lakd`` command: a :class:`ConsoleLog` closed inside stays open until the command ends,
    then gets the traceback of an exception that ends it (the one the interpreter prints next)."""
    global _keeping
    _keeping += 1
    ended_by = None
    try:
        yield
    except BaseException as exc:
        ended_by = exc
        raise
    finally:
        _keeping -= 1
        if not _keeping:
            _close_kept(ended_by)
