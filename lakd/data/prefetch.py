"""Overlap the loader hand-off with the training step.

Taking a batch from DataLoader worker processes costs the main process about a millisecond or more per batch
(unpickling, receiving the shared-memory file descriptors from the worker, sending it the next index); on a
busy host it also waits until the worker is scheduled. `Prefetcher` does that in a background thread while
the step computes (PyTorch releases the GIL in its kernels), so the step only takes a ready batch.

Exact resume is kept: the thread pairs each batch it takes with the stream's state *after* it, and
`state_dict()` returns the state of the last batch handed out, never of one still waiting. Stopping (``close``,
``load_state_dict``) rewinds the stream to that state, so prefetched batches are read again, not lost.
The first batch after a (re)start is taken in the caller's thread: that is where the DataLoader starts its
worker processes, and it watches them for a sudden death (a SIGCHLD handler) only when started from the main
thread.
"""
from __future__ import annotations

import queue
import threading


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Wraps a resumable stream (``__next__``, ``state_dict``, ``load_state_dict``, ``close``) and keeps up to
    ``depth`` batches taken ahead by a background thread."""

    def __init__(self, stream, depth: int = 1):
        self.stream = stream
        self.depth = max(1, int(depth))
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state: dict | None = None  # stream state after the last batch handed out

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._thread is None:
            batch = next(self.stream)  # caller's thread: worker start-up happens here (see the docstring)
            self._state = self.stream.state_dict()
            self._start()
            return batch
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._thread.join()
            self._thread = None
            raise item.exc
        batch, self._state = item
        return batch

    def _start(self) -> None:
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._run, name="lakd-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = (next(self.stream), self.stream.state_dict())
            except BaseException as exc:  # handed to the consumer, raised there
                item = _Failure(exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(item, _Failure):
                return

    def _halt(self) -> None:
        """Stop the thread, drop what it took ahead and rewind the stream to the last batch handed out."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._queue = None
        if self._state is not None:
            self.stream.load_state_dict(self._state)

    def state_dict(self) -> dict:
        return self._state if self._state is not None else self.stream.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self._halt()
        self._state = None
        self.stream.load_state_dict(sd)

    def close(self) -> None:
        self._halt()
        self.stream.close()

    def __getattr__(self, name):  # stats, steps_per_epoch, ... of the wrapped stream
        if name == "stream":
            raise AttributeError(name)
        return getattr(self.stream, name)
