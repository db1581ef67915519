"""Run a sweep's plan on this machine, without Slurm: the same DAG, job after job in dependency order.

Shards and the results table are built in this process; each stage runs as ``lakd train --stage S --config
<resolved config>`` in ``procs`` local processes (rank/world/master in the environment, gloo on CPU), so a
stage behaves exactly as it does in a job. Up to ``parallel`` stages whose dependencies finished run at the
same time (independent seeds, baselines beside teachers), so a small machine is kept busy. Finished jobs are
skipped, unfinished ones resume from their checkpoints; a failing stage is retried ``resources.retries`` times (resuming), then the jobs that need it
are skipped and the sweep goes on with the others. Ctrl-C (or SIGTERM) asks the running stage to checkpoint
and stop; running the sweep again resumes it. A stage whose folder is still held by a ``lakd train`` not started
here (the stages of a launcher killed with SIGKILL keep running: they have their own session) is reported as
still running, with the holder's pid and host, and waited for: done if that run finishes it, started again
(resuming) if it ends without finishing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lakd import exit_codes
from lakd.net import free_port
from lakd.sweep.plan import Plan
from lakd.sweep.slurm import config_path, write_plan_files
from lakd.engine.runlock import lock_holder
from lakd.sweep.state import finished_on_disk, holder_text, sweep_lock


class Interrupted(RuntimeError):
    """The local sweep was stopped by Ctrl-C/SIGTERM; the running stage checkpointed. Run again to resume."""


@dataclass
class LocalReport:
    skipped_done: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not run: a job they need failed
    results: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


class StageProcesses:
    """``procs`` ranks of one stage job (RANK/WORLD_SIZE/MASTER_* set), started at once and polled, so that
    several stages can run side by side. When a rank fails, the others get ``grace_s`` seconds to end before
    they are killed."""

    def __init__(self, cmd: list[str], procs: int, *, env: Optional[dict] = None, grace_s: float = 60.0):
        base = dict(os.environ if env is None else env)
        port = free_port()
        self.grace_s = grace_s
        self.first_fail_at: Optional[float] = None
        self.children: list[subprocess.Popen] = []
        for rank in range(procs):
            e = dict(base, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs),
                     LOCAL_WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            # own session: a terminal's Ctrl-C reaches only us; we pass it on as SIGTERM (checkpoint + stop)
            self.children.append(subprocess.Popen(cmd, env=e, start_new_session=True))

    def poll(self) -> Optional[int]:
        """None while a rank runs; then the job's status: 0, the preemption status when every rank reported
        it, else the first failure."""
        codes = [c.poll() for c in self.children]
        if self.first_fail_at is None and any(c not in (None, 0) for c in codes):
            self.first_fail_at = time.monotonic()
        if self.first_fail_at is not None and time.monotonic() - self.first_fail_at > self.grace_s:
            for c in self.children:
                if c.poll() is None:
                    c.kill()
        if any(c is None for c in codes):
            return None
        failures = [c for c in codes if c not in (exit_codes.OK, exit_codes.REQUEUE)]
        if failures:
            return failures[0]
        return exit_codes.REQUEUE if exit_codes.REQUEUE in codes else exit_codes.OK

    def terminate(self) -> None:
        """Ask every rank to checkpoint and stop (SIGTERM)."""
        for c in self.children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)


class _Interrupts:
    """SIGINT/SIGTERM while stages run: remembered and passed on as SIGTERM to every running stage (they
    checkpoint and stop). Only the main thread can catch signals; elsewhere nothing is installed."""

    def __init__(self, running: Callable[[], list[StageProcesses]]):
        self.running = running
        self.signals: list[int] = []
        self.old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _forward(self, signum, frame):  # noqa: ARG002
        self.signals.append(signum)
        for stage in self.running():
            stage.terminate()

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)

    def raise_if_interrupted(self) -> None:
        if self.signals:
            raise Interrupted(f"stopped by {signal.Signals(self.signals[0]).name}; the running stages saved a "
                              "checkpoint if they could; run the sweep again to resume")


def run_stage_processes(cmd: list[str], procs: int, *, env: Optional[dict] = None, poll_s: float = 0.2,
                        grace_s: float = 60.0) -> int:
    """Run one stage job as ``procs`` ranks and wait for it (see :class:`StageProcesses`). SIGINT/SIGTERM are
    passed on as SIGTERM (checkpoint and stop); :class:`Interrupted` is raised once the ranks ended."""
    stage = StageProcesses(cmd, procs, env=env, grace_s=grace_s)
    with _Interrupts(lambda: [stage]) as interrupts:
        while (rc := stage.poll()) is None:
            time.sleep(poll_s)
    interrupts.raise_if_interrupted()
    return rc


def _critical_path(plan: Plan) -> dict[str, float]:
    """Per job: its own estimated cost plus the longest chain of jobs that wait for it (training steps, a
    dual-path teacher counted twice). Ready stages start longest-chain first, so that the stages everything
    else waits for, and the long ones, do not end up alone at the end."""
    def cost(job) -> float:
        if job.kind != "stage" or not job.config:
            return 0.0
        dual = job.stage == "teacher" and (job.config.get("teacher_loss") or {}).get("dual_path", False)
        return float((job.config.get("train") or {}).get("iters", 1)) * (2.0 if dual else 1.0)

    dependants: dict[str, list[str]] = {k: [] for k in plan.jobs}
    for job in plan.jobs.values():
        for d in job.deps:
            dependants.setdefault(d, []).append(job.key)
    memo: dict[str, float] = {}

    def path(key: str) -> float:
        if key not in memo:
            memo[key] = cost(plan.jobs[key]) + max((path(k) for k in dependants[key]), default=0.0)
        return memo[key]

    return {k: path(k) for k in plan.jobs}


def default_parallel() -> int:
    """Stages run side by side by default: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_local(plan: Plan, *, procs: int = 1, parallel: int = 1, retries: Optional[int] = None,
              log: Callable[[str], None] = print, python: str = sys.executable, poll_s: float = 0.2) -> LocalReport:
    """Execute ``plan`` here (see module docstring). ``procs``: processes per stage (gloo on CPU);
    ``parallel``: stage jobs run at the same time once their dependencies finished (shards and the results
    table run in this process, alone)."""
    from lakd.sweep import tasks

    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    report = LocalReport()
    retries = plan.spec.resources.retries if retries is None else retries
    order = plan.ordered()
    number = {job.key: n for n, job in enumerate(order, 1)}
    priority = _critical_path(plan)
    order = sorted(order, key=lambda j: -priority[j.key])  # stable: plan order among equals
    total = len(order)
    head = lambda job: f"[{number[job.key]}/{total}] {job.key}"  # noqa: E731
    pending = list(order)
    running: dict[str, tuple[StageProcesses, float, int]] = {}  # key -> (ranks, start, attempt)
    # stages a process not started here still runs (one a killed launcher left behind: it holds the folder's
    # run lock): waited for, never counted as failed; they take a slot of `parallel` like a running stage
    elsewhere: dict[str, float] = {}  # key -> when we started waiting
    done_keys: set[str] = set()

    # side by side, each stage gets its share of the cores (OpenMP threads spinning against each other were
    # measured 20x slower on a busy 2-core machine); an OMP_NUM_THREADS set by the user wins
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, default_parallel() // (parallel * procs)))

    def stage_cmd(job) -> list[str]:
        return [python, "-m", "lakd.cli", "train", "--stage", job.stage, "--config", str(config_path(plan, job))]

    def finish(job, t0: float) -> None:
        report.ran.append(job.key)
        report.seconds[job.key] = time.monotonic() - t0
        done_keys.add(job.key)
        log(f"{head(job)}: done in {report.seconds[job.key]:.1f} s")

    with sweep_lock(plan.state_dir, "local executor"), \
            _Interrupts(lambda: [r[0] for r in running.values()]) as interrupts:
        write_plan_files(plan)
        for job in list(pending):  # once, not at every poll: nothing but this run changes what is on disk
            if finished_on_disk(job, plan):
                pending.remove(job)
                report.skipped_done.append(job.key)
                done_keys.add(job.key)
                log(f"{head(job)}: finished earlier, skipped")
        while pending or running or elsewhere:
            # stages run by an earlier launch: done when it let go of the folder (finished, or started again here)
            for key, t0 in list(elsewhere.items()):
                job = plan.jobs[key]
                if lock_holder(job.stage_dir) is not None:
                    continue
                del elsewhere[key]
                if finished_on_disk(job, plan):
                    report.skipped_done.append(key)
                    done_keys.add(key)
                    log(f"{head(job)}: finished by that run (waited {time.monotonic() - t0:.1f} s)")
                else:
                    pending.insert(0, job)
                    log(f"{head(job)}: that run ended without finishing; starting it again (it resumes from its "
                        "newest checkpoint)")
            # collect finished stages (retry a failure, resuming from its newest checkpoint)
            for key, (ranks, t0, attempt) in list(running.items()):
                rc = ranks.poll()
                if rc is None:
                    continue
                del running[key]
                job = plan.jobs[key]
                if rc == 0:
                    finish(job, t0)
                    continue
                if interrupts.signals:
                    continue
                more = attempt < retries
                log(f"{head(job)}: exit status {rc}" + (f"; retry {attempt + 1} of {retries}, resuming from the "
                                                       "newest checkpoint" if more else "; giving up"))
                if more:
                    running[key] = (StageProcesses(stage_cmd(job), procs, env=env), t0, attempt + 1)
                else:
                    report.failed.append(key)
            if interrupts.signals:
                for key in elsewhere:
                    log(f"{head(plan.jobs[key])}: not waiting any longer; it is still running "
                        f"({holder_text(lock_holder(plan.jobs[key].stage_dir) or {})})")
                elsewhere.clear()
                if not running:
                    break
                time.sleep(poll_s)
                continue
            # start what is ready, in plan order
            started = False
            for job in list(pending):
                bad = [d for d in job.deps if d in report.failed or d in report.blocked]
                if bad and job.kind != "collect":
                    pending.remove(job)
                    report.blocked.append(job.key)
                    log(f"{head(job)}: skipped, it needs {', '.join(bad)} which did not finish")
                    continue
                waiting = [d for d in job.deps if d not in done_keys and d not in report.failed
                           and d not in report.blocked]
                if waiting:
                    continue
                if job.kind in ("shards", "collect"):
                    if running:
                        continue  # run alone, in this process, once the stages before it ended
                    pending.remove(job)
                    log(f"{head(job)}: {job.label}")
                    t0 = time.monotonic()
                    if job.kind == "shards":
                        tasks.build_dataset_shards(job.shards)
                    else:
                        results = tasks.collect_task(plan.describe(), str(plan.sweep_dir))
                        report.results = {k: Path(v) for k, v in results.items()}
                    finish(job, t0)
                    started = True
                    break
                if len(running) + len(elsewhere) >= parallel:
                    break
                pending.remove(job)
                holder = lock_holder(job.stage_dir)
                if holder is not None:  # lakd train would refuse: the stage is still running elsewhere
                    elsewhere[job.key] = time.monotonic()
                    log(f"{head(job)}: still running ({holder_text(holder)}, started by an earlier launch or "
                        "another run); waiting for it")
                    started = True
                    continue
                log(f"{head(job)}: {job.label} -> {job.stage_dir}")
                running[job.key] = (StageProcesses(stage_cmd(job), procs, env=env), time.monotonic(), 0)
                started = True
            if not started and (running or pending or elsewhere):
                if not running and not elsewhere and pending and not any(
                        all(d in done_keys or d in report.failed or d in report.blocked for d in j.deps)
                        for j in pending):
                    raise RuntimeError("local executor: no job can start (dependency cycle?): "
                                       + ", ".join(j.key for j in pending))
                time.sleep(poll_s)
    interrupts.raise_if_interrupted()
    return report
