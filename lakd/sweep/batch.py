"""The batch step of every lakd Slurm job: start the job step, pass signals on to it, requeue afterwards.

    python -m lakd.sweep.batch [--retries N] [--max-requeues M] [--events FILE] [--srun-wait S] train ARGS...
    python -m lakd.sweep.batch [--retries N] [--max-requeues M] [--events FILE] -- srun ARGS...

The shipped batch script (``lakd sweep script``, slurm/teacher.sh, slurm/student.sh) ends with ``exec python
-m lakd.sweep.batch train ...`` (``srun lakd train ...`` on every task of the job); the sweep's submitit jobs
turn submitit's own ``srun`` line into ``exec python -m lakd.sweep.batch ... -- srun ...``. This process is
then the job's batch step, and:

- **USR1 / USR2 sent to the batch step** (``scancel --batch --signal=USR2``, ``#SBATCH --signal=B:USR2@N``)
  are passed on to srun, which passes them to every task: the ranks checkpoint and exit with 75, exactly as
  when the signal goes to the tasks directly (``--signal=USR2@N``, ``scancel --signal=USR2``). A shell would
  die of USR2 (its default action), and ``trap '' USR2`` would make srun ignore it too.
- **SIGTERM to the batch step** means Slurm is ending the whole job. At once (Slurm sends SIGKILL KillWait
  seconds later) the batch step asks Slurm why: at a **hard time limit** (a job without ``--signal``, or one
  whose signal came too late) it requeues the job right away (``scontrol requeue`` works on a job that is
  being completed); the tasks got SIGTERM too, save a checkpoint and exit, and the next attempt resumes from
  the newest one (lakd.sweep.requeue.requeue_at_time_limit). Otherwise (``scancel``, the end of a preemption
  grace time) the job is not requeued from here: a user's cancel stays a cancel, and a preempted job is
  requeued by Slurm itself (``PreemptMode=REQUEUE``). (Preemption with a grace time first sends SIGTERM to
  the tasks only: they checkpoint and exit 75, and the job is requeued below.)
- when srun has ended, :func:`lakd.sweep.requeue.after_step` decides on its exit status: requeue after a
  checkpoint, retry after a failure, or give up (and then cancel the sweep jobs that wait for this one).

At the start of an attempt that Slurm restarted without lakd asking (``scontrol requeue``, a node failure,
preemption, submitit's own requeue), an event says so (lakd.sweep.requeue.note_restart).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Optional

from lakd import exit_codes

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2)
# launcher variables left in the submitting shell (sbatch exports its environment) would make every task think
# it is rank 0 of 1: inside the job, Slurm is the launcher
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                 "MASTER_PORT")


def _log(msg: str) -> None:
    print(f"lakd: {msg}", file=sys.stderr, flush=True)


class StepRunner:
    """Run the job step as a child; forward USR1/USR2 to it; remember a SIGTERM to ourselves and call
    ``on_terminate`` once, soon after it (outside the signal handler), while the step is still ending."""

    POLL_S = 0.2  # how soon after a SIGTERM on_terminate runs (Slurm's KillWait is 30 s by default)

    def __init__(self, cmd: list[str], env: Optional[dict] = None,
                 on_terminate: Optional[Callable[[], None]] = None) -> None:
        self.cmd = cmd
        self.env = env
        self.on_terminate = on_terminate
        self.child: Optional[subprocess.Popen] = None
        self.pending: list[int] = []  # signals that arrived before the step started
        self.terminated = False  # SIGTERM reached the batch step: Slurm is ending the job
        self._told = False  # on_terminate ran

    def _tell(self) -> None:
        if self.terminated and not self._told:
            self._told = True
            if self.on_terminate is not None:
                self.on_terminate()

    def _wait(self) -> int:
        while True:
            try:
                rc = self.child.wait(timeout=self.POLL_S)
            except subprocess.TimeoutExpired:
                self._tell()
                continue
            self._tell()
            return rc

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM:
            self.terminated = True
            _log(f"the batch step got {name}: Slurm is ending the job")
            return
        if self.child is None:
            self.pending.append(signum)
        elif self.child.poll() is None:
            _log(f"the batch step got {name}: passing it on to the job step")
            self.child.send_signal(signum)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._handle) for s in (*FORWARDED, signal.SIGTERM)}
        try:
            try:
                self.child = subprocess.Popen(self.cmd, env=self.env)
            except OSError as exc:
                _log(f"cannot start {self.cmd[0]}: {exc}")
                return 127
            for signum in self.pending:
                _log(f"the batch step got {signal.Signals(signum).name} before the step started: passing it on")
                self.child.send_signal(signum)
            rc = self._wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return rc if rc >= 0 else 128 - rc


def train_command(train_args: list[str], srun_wait_s: int, python: str = sys.executable) -> list[str]:
    """srun over every task of the allocation: ``lakd train`` with the script's arguments, one per task."""
    srun = ["srun", "--kill-on-bad-exit=0"]
    if srun_wait_s:
        srun.append(f"--wait={srun_wait_s}")
    return [*srun, python, "-m", "lakd.cli", "train", *train_args]


def stage_of(train_args: list[str]) -> str:
    """The value of the last ``--stage`` (argparse's rule), for the log line."""
    stage = "?"
    for i, arg in enumerate(train_args):
        if arg == "--stage" and i + 1 < len(train_args):
            stage = train_args[i + 1]
        elif arg.startswith("--stage="):
            stage = arg.split("=", 1)[1]
    return stage


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise SystemExit(f"lakd: {name} must be an integer, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lakd.sweep.batch", description=__doc__.splitlines()[0])
    ap.add_argument("--retries", type=int, default=_env_int("LAKD_RETRIES", 2),
                    help="requeues after a failure (default: $LAKD_RETRIES or 2)")
    ap.add_argument("--max-requeues", type=int, default=_env_int("LAKD_MAX_REQUEUES", 50),
                    help="requeues after preemption / time-limit signal (default: $LAKD_MAX_REQUEUES or 50)")
    ap.add_argument("--srun-wait", type=int, default=_env_int("LAKD_SRUN_WAIT", 120),
                    help="train: seconds the other tasks get once one ended (default: $LAKD_SRUN_WAIT or 120)")
    ap.add_argument("--events", default=os.environ.get("LAKD_EVENTS") or None,
                    help="append one JSON line per requeue decision to this file")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    from lakd.sweep.requeue import after_step, job_id_from_env, note_restart, requeue_at_time_limit

    argv = list(sys.argv[1:] if argv is None else argv)
    if "train" in argv and ("--" not in argv or argv.index("train") < argv.index("--")):
        cut = argv.index("train")
        opts, rest, mode = argv[:cut], argv[cut + 1:], "train"
    elif "--" in argv:
        cut = argv.index("--")
        opts, rest, mode = argv[:cut], argv[cut + 1:], "command"
    else:
        build_parser().print_usage(sys.stderr)
        _log("expected `train ARGS...` or `-- COMMAND...`")
        return exit_codes.USAGE
    args = build_parser().parse_args(opts)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    if mode == "train":
        cmd = train_command(rest, args.srun_wait)
        what = f"{stage_of(rest)} stage"
    else:
        if not rest:
            _log("nothing to run after `--`")
            return exit_codes.USAGE
        cmd = rest
        what = os.environ.get("SLURM_JOB_NAME") or rest[0]
    if cmd[0] == "srun" and shutil.which("srun") is None:
        _log("srun not found on this node's PATH")
        return 127
    job = job_id_from_env()
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    print(f"lakd: attempt {restarts + 1} of job {job or '?'}: {what}, nodes "
          f"{os.environ.get('SLURM_JOB_NODELIST', '?')}, batch step on {socket.gethostname()}, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}", file=sys.stderr, flush=True)
    if job and restarts:
        note_restart(job, restarts, args.events)
    at_limit: list[bool] = []

    def on_terminate() -> None:  # Slurm ends the job: requeue now when it is the time limit (module docstring)
        at_limit.append(requeue_at_time_limit(max_requeues=args.max_requeues, events=args.events))

    runner = StepRunner(cmd, env, on_terminate=on_terminate)
    rc = runner.run()
    return after_step(rc, max_requeues=args.max_requeues, retries=args.retries, events=args.events,
                      terminated=runner.terminated, requeued=any(at_limit))


if __name__ == "__main__":
    sys.exit(main())
