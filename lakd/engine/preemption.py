"""Preemption: a signal only sets a flag; the train loop acts on it at the next step boundary.

SIGUSR1, SIGUSR2 (submitit's and our sbatch scripts' pre-timeout signal) and SIGTERM (Slurm's preemption
and ``scancel``) set the flag. At the next step boundary all ranks agree (the flag rides on the per-step
all-reduce), every rank takes part in the collective checkpoint save, and :func:`lakd.engine.stage.run_stage`
raises :class:`Preempted`. The ``lakd train`` command turns that into exit status :data:`EXIT_REQUEUE`
(75, ``EX_TEMPFAIL``: "try again later"); launchers requeue the job on it and the next start resumes from
the checkpoint just written.

Inside submitit, our handlers replace submitit's for the duration of the stage and the previous handlers
are restored afterwards, so a caller that catches :class:`Preempted` on global rank 0 can hand the signal
to submitit's own handler (``signal.getsignal(exc.signum)(exc.signum, None)``) to requeue the job.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

from lakd.exit_codes import REQUEUE as EXIT_REQUEUE  # the name launchers import from here

from lakd.exit_codes import INTERRUPTED

# SIGINT (Ctrl-C) is handled the same way: the run saves at the next step boundary and exits 130; a second
# Ctrl-C interrupts at once (KeyboardInterrupt)
SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The stage stopped at a step boundary after a preemption signal; every rank saved a checkpoint."""

    exit_status = EXIT_REQUEUE

    def __init__(self, step: int, signum: Optional[int], checkpoint: Optional[str]):
        name = signal.Signals(signum).name if signum else "a signal on another rank"
        if signum == signal.SIGINT:
            self.exit_status = INTERRUPTED
            text = (f"interrupted (Ctrl-C) at step {step}; checkpoint {checkpoint} saved; run the same command "
                    f"again to resume")
        else:
            text = f"preempted by {name} at step {step}; checkpoint {checkpoint} saved, requeue to resume"
        super().__init__(text)
        self.step = step
        self.signum = signum
        self.checkpoint = checkpoint


class PreemptionFlag:
    """Installs handlers for :data:`SIGNALS` (main thread only) and remembers the first signal received."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: do not wait for the step boundary
        if self.signum is None:
            self.signum = signum

    def install(self, signals: tuple = SIGNALS) -> "PreemptionFlag":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be handled in the main thread; nothing to install
        for sig in signals:
            previous = signal.signal(sig, self._handle)
            self._previous[sig] = previous
            # a flag installed earlier in this process (`lakd train` installs one before its slow imports, so
            # that a pre-timeout signal during start-up is not fatal) hands over the signal it already caught
            earlier = getattr(previous, "__self__", None)
            if isinstance(earlier, PreemptionFlag) and earlier.signum is not None and self.signum is None:
                self.signum = earlier.signum
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> "PreemptionFlag":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
