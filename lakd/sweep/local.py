"""Run a sweep's plan on this machine, without Slurm: the same DAG, job after job in dependency order.

Shards and the results table are built in this process; each stage runs as ``lakd train --stage S --config
<resolved config>`` in ``procs`` local processes (rank/world/master in the environment, gloo on CPU), so a
stage behaves exactly as it does in a job. Finished jobs are skipped, unfinished ones resume from their
checkpoints; a failing stage is retried ``resources.retries`` times (resuming), then the jobs that need it
are skipped and the sweep goes on with the others. Ctrl-C (or SIGTERM) asks the running stage to checkpoint
and stop; running the sweep again resumes it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lakd.sweep.plan import Plan
from lakd.sweep.slurm import config_path, write_plan_files
from lakd.sweep.state import finished_on_disk, sweep_lock


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage_processes(cmd: list[str], procs: int, *, env: Optional[dict] = None, poll_s: float = 0.2,
                        grace_s: float = 60.0) -> int:
    """Run ``cmd`` as ``procs`` ranks of one job (RANK/WORLD_SIZE/MASTER_* set). When a rank fails, the others
    get ``grace_s`` seconds to end before they are killed. Returns the job's status: 0, the preemption status
    when every rank reported it, else the first failure. SIGINT/SIGTERM are passed on as SIGTERM (checkpoint
    and stop); :class:`Interrupted` is raised once the ranks ended."""
    base = dict(os.environ if env is None else env)
    port = _free_port()
    children: list[subprocess.Popen] = []
    for rank in range(procs):
        e = dict(base, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs), LOCAL_WORLD_SIZE=str(procs),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        # own session: a terminal's Ctrl-C reaches only us; we pass it on as SIGTERM (checkpoint + stop)
        children.append(subprocess.Popen(cmd, env=e, start_new_session=True))
    interrupted: list[int] = []

    def forward(signum, frame):  # noqa: ARG001
        interrupted.append(signum)
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)

    main = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        first_fail_at = None
        while True:
            codes = [c.poll() for c in children]
            if all(c is not None for c in codes):
                break
            if first_fail_at is None and any(c not in (None, 0) for c in codes):
                first_fail_at = time.monotonic()
            if first_fail_at is not None and time.monotonic() - first_fail_at > grace_s:
                for c in children:
                    if c.poll() is None:
                        c.kill()
            time.sleep(poll_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    codes = [c.returncode for c in children]
    if interrupted:
        raise Interrupted(f"stopped by {signal.Signals(interrupted[0]).name}; the stage saved a checkpoint "
                          "if it could; run the sweep again to resume")
    from lakd.engine.preemption import EXIT_REQUEUE

    failures = [c for c in codes if c not in (0, EXIT_REQUEUE)]
    if failures:
        return failures[0]
    return EXIT_REQUEUE if EXIT_REQUEUE in codes else 0


def run_local(plan: Plan, *, procs: int = 1, retries: Optional[int] = None, log: Callable[[str], None] = print,
              python: str = sys.executable) -> LocalReport:
    """Execute ``plan`` here (see module docstring). ``procs``: processes per stage (gloo on CPU)."""
    from lakd.sweep import tasks

    report = LocalReport()
    retries = plan.spec.resources.retries if retries is None else retries
    with sweep_lock(plan.state_dir, "local executor"):
        write_plan_files(plan)
        total = len(plan.jobs)
        for n, job in enumerate(plan.ordered(), 1):
            head = f"[{n}/{total}] {job.key}"
            if finished_on_disk(job, plan):
                report.skipped_done.append(job.key)
                log(f"{head}: finished earlier, skipped")
                continue
            bad = [d for d in job.deps if d in report.failed or d in report.blocked]
            if bad and job.kind != "collect":
                report.blocked.append(job.key)
                log(f"{head}: skipped, it needs {', '.join(bad)} which did not finish")
                continue
            log(f"{head}: {job.label}" + (f" -> {job.stage_dir}" if job.stage_dir else ""))
            t0 = time.monotonic()
            if job.kind == "shards":
                tasks.build_dataset_shards(job.shards)
            elif job.kind == "collect":
                report.results = tasks.collect_task(plan.describe(), str(plan.sweep_dir))
                report.results = {k: Path(v) for k, v in report.results.items()}
            else:
                cmd = [python, "-m", "lakd.cli", "train", "--stage", job.stage, "--config",
                       str(config_path(plan, job))]
                for attempt in range(retries + 1):
                    rc = run_stage_processes(cmd, procs)
                    if rc == 0:
                        break
                    more = attempt < retries
                    log(f"{head}: exit status {rc}" + (f"; retry {attempt + 1} of {retries}, resuming from the "
                                                      "newest checkpoint" if more else "; giving up"))
                    if not more:
                        report.failed.append(job.key)
                        break
                if job.key in report.failed:
                    continue
            report.ran.append(job.key)
            report.seconds[job.key] = time.monotonic() - t0
            log(f"{head}: done in {report.seconds[job.key]:.1f} s")
    return report
