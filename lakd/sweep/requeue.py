"""Requeue policy of a Slurm job after its ``srun`` step ended; run by the job's batch shell.

    python -m lakd.sweep.requeue --rc "$rc" [--max-requeues N] [--retries M] [--events FILE]

The sbatch scripts (``slurm/teacher.sh``, ``slurm/student.sh``) and the sweep's submitit jobs (teardown lines)
call it with srun's exit status:

- ``0``: the stage finished; nothing to do.
- ``EXIT_REQUEUE`` (75, lakd.engine.preemption): every rank saved a checkpoint after a preemption or
  pre-timeout signal; the job is requeued (same job id, so jobs that depend on it keep waiting) until it has been
  requeued ``--max-requeues`` times for that reason.
- 2 (bad input) or 3 (non-finite loss, lakd.engine.trainer.EXIT_DIVERGED): reported, not retried.
- anything else: a failure, e.g. a rank that crashed or a node that died (srun's ``--wait`` ends the other ranks
  in bounded time). The failing node and rank are taken from srun's messages in the job's stderr and reported;
  the job is requeued up to ``--retries`` times and then left failed. Every restart resumes from the newest
  complete checkpoint on disk.

The failure count lives in the job's Slurm comment (``lakd_failures=N``, kept across requeues, visible in
``squeue -o %k``); events are appended to ``--events`` (JSON lines) when given. Exit status: 0 when the job was
requeued or finished, else the failing status.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from lakd.engine.preemption import EXIT_REQUEUE

_SRUN_ERROR = re.compile(r"srun: error: (\S+): tasks? ([0-9][0-9,\-]*): (.+)$")
# the start of one attempt in a job's stderr (sbatch scripts, lakd.sweep.tasks): srun errors before it are older
_ATTEMPT_START = re.compile(r"lakd: attempt \d+ of job")
_FAILURES = re.compile(r"lakd_failures=(\d+)")


def job_id_from_env(env: Optional[dict] = None) -> Optional[str]:
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def show_job(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (values may hold spaces: split on `` Key=``)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    line = out.strip().splitlines()[0] if out.strip() else ""
    fields = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s[A-Za-z][A-Za-z0-9_:/]*=|$)", line):
        fields.setdefault(m.group(1), m.group(2))
    return fields


def srun_failures(stderr_path: Optional[str], max_bytes: int = 256 * 1024) -> list[str]:
    """srun's ``error: NODE: task N: WHAT`` lines of the latest attempt, as ``"NODE rank N: WHAT"``."""
    if not stderr_path:
        return []
    try:
        with open(stderr_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    start = max((i for i, line in enumerate(lines) if _ATTEMPT_START.search(line)), default=-1)
    out = []
    for line in lines[start + 1:]:
        m = _SRUN_ERROR.search(line)
        if m:
            node, tasks, what = m.groups()
            out.append(f"{node} rank {tasks}: {what.strip()}")
    # the first failure is the cause; the others are usually the ranks srun ended afterwards
    return out


def _append_event(path: Optional[str], event: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one short write per line: appends from several jobs stay whole lines
        f.write(json.dumps(event) + "\n")


def final_statuses() -> set[int]:
    """Exit statuses a retry cannot mend: bad input (2) and a diverged loss (lakd.engine.trainer)."""
    from lakd.engine.trainer import EXIT_DIVERGED

    return {2, EXIT_DIVERGED}


def decide(rc: int, *, restarts: int, failures: int, max_requeues: int, retries: int) -> str:
    """``done`` | ``requeue`` | ``retry`` | ``give_up``."""
    if rc == 0:
        return "done"
    if rc == EXIT_REQUEUE:
        return "requeue" if restarts - failures < max_requeues else "give_up"
    if rc in final_statuses():
        return "give_up"
    return "retry" if failures < retries else "give_up"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lakd.sweep.requeue", description=__doc__.splitlines()[0])
    ap.add_argument("--rc", type=int, required=True, help="exit status of the srun step")
    ap.add_argument("--max-requeues", type=int, default=50, help="requeues after preemption/time limit")
    ap.add_argument("--retries", type=int, default=2, help="requeues after a failure")
    ap.add_argument("--events", default=None, help="append one JSON line per decision to this file")
    args = ap.parse_args(argv)

    job = job_id_from_env()
    if job is None:
        print("lakd requeue: not inside a Slurm job; nothing to do", file=sys.stderr)
        return args.rc
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    info = show_job(job)
    comment = info.get("Comment", "")
    comment = "" if comment == "(null)" else comment
    m = _FAILURES.search(comment)
    failures = int(m.group(1)) if m else 0
    action = decide(args.rc, restarts=restarts, failures=failures, max_requeues=args.max_requeues,
                    retries=args.retries)
    causes = srun_failures(info.get("StdErr")) if action in ("retry", "give_up") and args.rc != EXIT_REQUEUE else []
    event = {"time": time.time(), "job": job, "rc": args.rc, "action": action, "restarts": restarts,
             "failures": failures, "nodes": info.get("NodeList"), "cause": causes[0] if causes else None,
             "causes": causes}
    if action == "done":
        return 0
    cause = f" ({'; '.join(causes)})" if causes else ""
    if action == "requeue":
        msg = (f"lakd: job {job} checkpointed after a preemption/time-limit signal: requeue "
               f"{restarts - failures + 1} of at most {args.max_requeues}; it resumes from the newest checkpoint")
    elif action == "retry":
        new = _FAILURES.sub("", comment).strip(",; ")
        new = ",".join(x for x in (new, f"lakd_failures={failures + 1}") if x)
        subprocess.run(["scontrol", "update", f"JobId={job}", f"Comment={new}"], check=False, timeout=60)
        msg = (f"lakd: job {job} failed with status {args.rc}{cause}: retry {failures + 1} of {args.retries}; "
               "it resumes from the newest complete checkpoint")
    else:
        if args.rc == EXIT_REQUEUE:
            reason = f"requeued {restarts - failures} times already"
        elif args.rc in final_statuses():
            reason = "a retry would fail the same way (bad input or diverged loss, see the log)"
        else:
            reason = f"failed {failures + 1} times ({args.retries} retries)"
        msg = f"lakd: job {job} ended with status {args.rc}{cause}; {reason}: not requeued"
    event["message"] = msg
    print(msg, file=sys.stderr, flush=True)
    _append_event(args.events, event)
    if action == "give_up":
        return args.rc
    r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        print(f"lakd: scontrol requeue {job} failed: {r.stderr.strip()}", file=sys.stderr, flush=True)
        return args.rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
