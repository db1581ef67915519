"""Requeue policy of a Slurm job after its ``srun`` step ended; run by the job's batch step.

    python -m lakd.sweep.requeue --rc "$rc" [--max-requeues N] [--retries M] [--events FILE]

lakd.sweep.batch (the batch step of the shipped batch script and of the sweep's submitit jobs) calls
:func:`after_step` with srun's exit status:

- ``0``: the stage finished; nothing to do.
- ``exit_codes.REQUEUE`` (75): every rank saved a checkpoint after a preemption or
  pre-timeout signal; the job is requeued (same job id, so jobs that depend on it keep waiting) until it has been
  requeued ``--max-requeues`` times for that reason.
- ``exit_codes.USAGE`` (bad input) or ``exit_codes.DIVERGED`` (non-finite loss): reported, not retried.
- anything else: a failure, e.g. a rank that crashed or a node that died (srun's ``--wait`` ends the other ranks
  in bounded time). The failing node and rank are taken from srun's messages in the job's stderr and reported;
  the job is requeued up to ``--retries`` times and then left failed. Every restart resumes from the newest
  complete checkpoint on disk. When a whole node died, that node is named (srun's "Node failure on ...", or
  the job's node that Slurm marks down), not the surviving rank srun ended afterwards.
- a sweep job that gives up cancels the sweep's jobs that wait for it (lakd.sweep.state.block_dependants).
- SIGTERM to the batch step (Slurm ends the whole job): at a hard time limit (``Reason=TimeLimit``: a job
  without ``--signal``, or whose signal came too late) :func:`requeue_at_time_limit` requeues it at once,
  counted like a signal requeue (the tasks save a checkpoint on their SIGTERM; the next attempt resumes from the
  newest one). Otherwise (scancel, end of a preemption grace time) never requeued from here: a user's scancel
  stays a cancel.

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

from lakd import exit_codes

_SRUN_ERROR = re.compile(r"srun: error: (\S+): tasks? ([0-9][0-9,\-]*): (.+)$")
_NODE_FAILURE = re.compile(r"srun: error: Node failure on (\S+)")
# printed by the slurmstepd of a node that is still alive ("ON n1"): a node failed, but not which one
_CANCELLED_BY_NODE_FAILURE = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO NODE FAILURE")
# the start of one attempt in a job's stderr (sbatch scripts, lakd.sweep.tasks): srun errors before it are older
_ATTEMPT_START = re.compile(r"lakd: attempt \d+ of job")
_ATTEMPT_NODES = re.compile(r"lakd: attempt \d+ of job .*, nodes (\S+), batch step on ")
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


def _tail_lines(path: Optional[str], max_bytes: int = 256 * 1024) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def _attempt_lines(stderr_path: Optional[str], attempt: int = -1, max_bytes: int = 256 * 1024) -> list[str]:
    """The lines of one attempt in the job's stderr after its last ``lakd: attempt N of job`` line (``attempt=-1``:
    the latest, ``-2``: the one before)."""
    lines = _tail_lines(stderr_path, max_bytes)
    starts = [-1] + [i for i, line in enumerate(lines) if _ATTEMPT_START.search(line)] + [len(lines)]
    if len(starts) < 1 - attempt:
        return []
    return lines[starts[attempt - 1] + 1:starts[attempt]]


def _previous_attempt_nodes(stderr_path: Optional[str]) -> Optional[str]:
    """The node list the batch step printed at the start of the attempt before this one."""
    found = [m.group(1) for m in map(_ATTEMPT_NODES.search, _tail_lines(stderr_path)) if m]
    return found[-2] if len(found) >= 2 else None


def srun_failures(stderr_path: Optional[str], max_bytes: int = 256 * 1024, attempt: int = -1) -> list[str]:
    """srun's ``error: NODE: task N: WHAT`` lines of the latest attempt (``attempt=-2``: the one before), as
    ``"NODE rank N: WHAT"``; ``"node failure on NODE"`` for a node srun saw fail, ``"node failure"`` when
    Slurm cancelled the step for a node failure without saying which node."""
    out = []
    for line in _attempt_lines(stderr_path, attempt, max_bytes):
        f = _NODE_FAILURE.search(line)
        node = f"node failure on {f.group(1)}" if f else None
        if node is None and _CANCELLED_BY_NODE_FAILURE.search(line):
            node = "node failure"
        if node:
            if node not in out:
                out.append(node)
            continue
        m = _SRUN_ERROR.search(line)
        if m:
            node, tasks, what = m.groups()
            out.append(f"{node} rank {tasks}: {what.strip()}")
    # the first failure is the cause; the others are usually the ranks srun ended afterwards
    return out


def _append_event(path: Optional[str], event: dict) -> None:
    if path:
        from lakd.sweep.state import append_event

        append_event(Path(path), event)


# exit statuses a retry cannot mend: bad input and a diverged loss
FINAL_STATUSES = frozenset({exit_codes.USAGE, exit_codes.DIVERGED})


def _failure_count(info: dict) -> tuple[str, int]:
    """The job's comment and the failure count lakd keeps in it."""
    comment = info.get("Comment", "")
    comment = "" if comment == "(null)" else comment
    m = _FAILURES.search(comment)
    return comment, int(m.group(1)) if m else 0


def at_time_limit(info: dict) -> bool:
    """Slurm is ending (or ended) the job because its time limit passed."""
    return info.get("Reason") == "TimeLimit" or info.get("JobState", "").startswith("TIMEOUT")


def requeue_at_time_limit(*, max_requeues: int, events: Optional[str] = None) -> bool:
    """Called by the batch step as soon as it gets SIGTERM: when Slurm is ending the job at its time limit,
    requeue it now (before KillWait runs out) and return True; otherwise (scancel, preemption) do nothing."""
    job = job_id_from_env()
    if job is None:
        return False
    info = show_job(job)
    if not at_time_limit(info):
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    _, failures = _failure_count(info)
    event = {"time": time.time(), "job": job, "rc": None, "restarts": restarts, "failures": failures,
             "nodes": info.get("NodeList"), "cause": "time limit (SIGTERM from Slurm)"}
    if info.get("Requeue") == "0":
        event["action"], why = "give_up", "it was submitted with --no-requeue"
    elif decide(exit_codes.REQUEUE, restarts=restarts, failures=failures, max_requeues=max_requeues,
                retries=0) != "requeue":
        event["action"], why = "give_up", f"requeued {restarts - failures} times already"
    else:
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            event["action"] = "requeue"
            event["message"] = (f"lakd: job {job} reached its time limit: requeued at once (requeue "
                                f"{restarts - failures + 1} of at most {max_requeues}); the tasks save a checkpoint "
                                "on Slurm's SIGTERM and the next attempt resumes from the newest one")
        else:
            event["action"], why = "give_up", f"scontrol requeue failed: {(r.stderr or r.stdout).strip()}"
    if event["action"] == "give_up":
        event["message"] = f"lakd: job {job} reached its time limit; {why}: not requeued"
    print(event["message"], file=sys.stderr, flush=True)
    _append_event(events, event)
    if event["action"] == "give_up":
        _block_dependants(job, events, "reached its time limit and was not requeued")
    return event["action"] == "requeue"


def decide(rc: int, *, restarts: int, failures: int, max_requeues: int, retries: int) -> str:
    """``done`` | ``requeue`` | ``retry`` | ``give_up``."""
    if rc == exit_codes.OK:
        return "done"
    if rc == exit_codes.REQUEUE:
        return "requeue" if restarts - failures < max_requeues else "give_up"
    if rc in FINAL_STATUSES:
        return "give_up"
    return "retry" if failures < retries else "give_up"


def _down_nodes(nodelist: Optional[str]) -> list[str]:
    """Nodes of ``nodelist`` that Slurm considers dead (down, failing, not responding)."""
    if not nodelist or nodelist == "(null)":
        return []
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-n", nodelist, "-o", "%N|%T"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    dead = []
    for line in out.splitlines():
        node, _, state = line.partition("|")
        if state.rstrip("*~#!%$@^-").lower() in ("down", "fail", "failing", "drain", "draining") or state.endswith("*"):
            dead.append(node)
    return sorted(set(dead))


def _silent_nodes(nodelist: Optional[str], batch_host: Optional[str], timeout_s: int = 20) -> list[str]:
    """Nodes of the job (other than the batch host, which runs this) where a one-task test step cannot run:
    a node that died before Slurm noticed (that takes SlurmdTimeout) answers no step."""
    if not nodelist or nodelist == "(null)":
        return []
    try:
        names = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                               timeout=60).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return []
    silent = []
    for node in names:
        if node == batch_host:
            continue
        try:
            r = subprocess.run(["srun", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={node}", "--quiet",
                                "--kill-on-bad-exit=1", "true"], capture_output=True, text=True, timeout=timeout_s)
            ok = r.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if not ok:
            silent.append(node)
    return silent


def _failure_causes(info: dict, rc: int) -> list[str]:
    """The failure of this attempt, the dead node first (a dead node's ranks report nothing; srun names the
    surviving ranks it ended afterwards): srun's "Node failure on", else nodes Slurm marks down, else nodes
    that answer no test step."""
    causes = srun_failures(info.get("StdErr"))
    dead = [c for c in causes if c.startswith("node failure on")]
    if not dead:
        dead = [f"node failure on {n}" for n in _down_nodes(info.get("NodeList"))]
    if not dead:
        dead = [f"node failure on {n} (it runs no step)" for n in _silent_nodes(info.get("NodeList"),
                                                                                 info.get("BatchHost"))]
    return dead + [c for c in causes if c not in dead]


def note_restart(job: str, restarts: int, events: Optional[str]) -> None:
    """At the start of attempt ``restarts + 1``: when Slurm restarted the job without a lakd decision (``scontrol
    requeue``, a node failure, preemption, submitit's own requeue), say so in the log and the events."""
    if not events:
        return
    ours = sum(1 for ev in _job_events(events, job) if ev.get("action") in ("requeue", "retry", "slurm_requeue"))
    if ours >= restarts:
        return
    prev = previous_attempt(job)
    cause = restart_cause(prev)
    if "node failure on" not in cause:  # no accounting here: what srun and the batch step saw in that attempt
        stderr = show_job(job).get("StdErr")
        seen = srun_failures(stderr, attempt=-2)
        seen += [ev.get("cause") or "" for ev in _job_events(events, job) if ev.get("action") == "ended"
                 and ev.get("restarts") == restarts - 1]
        dead = [c for c in seen if c.startswith("node failure on")]
        if not dead and (prev is None or prev["State"].startswith("NODE_FAIL")):
            # nothing recorded (the batch host itself died): the nodes of that attempt Slurm marks dead now
            dead = [f"node failure on {n}" for n in _down_nodes(_previous_attempt_nodes(stderr))]
        if dead:
            cause = f"{dead[0].split(' (')[0]}, requeued by Slurm"
    msg = (f"lakd: job {job} was restarted by Slurm (restart {restarts}: {cause}); it resumes from the newest "
           "complete checkpoint")
    print(msg, file=sys.stderr, flush=True)
    for _ in range(restarts - ours):
        _append_event(events, {"time": time.time(), "job": job, "action": "slurm_requeue", "restarts": restarts,
                               "nodes": (prev or {}).get("NodeList"), "state": (prev or {}).get("State"),
                               "cause": cause, "message": msg})


def _job_events(events: str, job: str) -> list[dict]:
    """The events of ``job`` in the events file, oldest first."""
    out = []
    try:
        lines = Path(events).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict) and str(ev.get("job")) == job:
            out.append(ev)
    return out


def previous_attempt(job: str) -> Optional[dict]:
    """The job's attempt before this one, from accounting (``sacct --duplicates``): State, NodeList, Start, End;
    None without accounting."""
    fields = ["JobID", "State", "Start", "End", "NodeList"]
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", ",".join(fields)],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.count("|") == len(fields) - 1]
    ended = [r for r in rows if r["JobID"] == job and r["End"] not in ("", "Unknown")
             and not r["State"].startswith(("RUNNING", "PENDING"))]
    return max(ended, key=lambda r: r["End"]) if ended else None


def _nodes_down_during(nodelist: str, start: str, end: str) -> list[str]:
    """Nodes of ``nodelist`` that went down while an attempt ran (the cluster's node events in accounting,
    ``sacctmgr show event``), else those Slurm marks dead now."""
    try:
        out = subprocess.run(["sacctmgr", "-n", "-P", "show", "event", "Event=Node", f"Nodes={nodelist}",
                              f"Start={start}", "format=NodeName,Start,State"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    dead = set()
    for line in out.splitlines():
        node, t, state = (line.split("|") + ["", "", ""])[:3]
        # ISO times compare as strings; the node's failure is noticed at most a little after the attempt ended
        if node and state.upper().startswith(("DOWN", "FAIL", "DRAIN")) and start <= t <= _plus_minutes(end, 10):
            dead.add(node)
    return sorted(dead) or _down_nodes(nodelist)


def _plus_minutes(iso: str, minutes: int) -> str:
    try:
        from datetime import datetime, timedelta

        return (datetime.fromisoformat(iso) + timedelta(minutes=minutes)).isoformat(timespec="seconds")
    except ValueError:
        return iso


def restart_cause(prev: Optional[dict]) -> str:
    """Why Slurm restarted the job, from its previous attempt: the node that died for a node failure."""
    if prev is None:
        return "requeued by Slurm"
    state = prev["State"].split()[0]
    if state == "NODE_FAIL":
        dead = _nodes_down_during(prev["NodeList"], prev["Start"], prev["End"])
        where = f" on {','.join(dead)}" if dead else f" (one of {prev['NodeList']})"
        return f"node failure{where}, requeued by Slurm"
    what = {"REQUEUED": "scontrol requeue or submitit", "PREEMPTED": "preempted"}.get(state, state.lower())
    return f"requeued by Slurm ({what})"


def after_step(rc: int, *, max_requeues: int, retries: int, events: Optional[str] = None,
               terminated: bool = False, requeued: bool = False) -> int:
    """Act on the exit status of the job step (see the module docstring); returns the batch step's status.
    ``requeued``: the job was already requeued at its time limit (:func:`requeue_at_time_limit`)."""
    job = job_id_from_env()
    if job is None:
        print("lakd requeue: not inside a Slurm job; nothing to do", file=sys.stderr)
        return rc
    if requeued:
        print(f"lakd: job {job}: the step ended with status {rc} after the time limit; the job is requeued",
              file=sys.stderr, flush=True)
        return exit_codes.OK
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    info = show_job(job)
    comment, failures = _failure_count(info)
    if terminated:  # Slurm ends the job (scancel, preemption, node failure): requeueing is Slurm's call
        if rc == exit_codes.OK:
            return exit_codes.OK
        why, cause = "SIGTERM to the batch step: scancel, node failure or preemption", "ended by Slurm (SIGTERM)"
        # a node failure: srun names the dead node ("Node failure on n2"); by now Slurm may have requeued the job
        seen = srun_failures(info.get("StdErr"))
        dead = [c for c in seen if c.startswith("node failure on")]
        if not dead and ("node failure" in seen or info.get("JobState", "").startswith("NODE_FAIL")
                         or info.get("Reason") == "NodeDown"):
            dead = [f"node failure on {n}" for n in _down_nodes(info.get("NodeList"))] or ["node failure"]
        if dead:
            why, cause = dead[0], f"{dead[0]} (ended by Slurm)"
        msg = (f"lakd: job {job} ended by Slurm ({why}) with status {rc}; not requeued here (Slurm requeues a "
               "preempted job, and one on a failed node when it may; otherwise the next run of the sweep resumes "
               "it from its checkpoint)")
        print(msg, file=sys.stderr, flush=True)
        _append_event(events, {"time": time.time(), "job": job, "rc": rc, "action": "ended", "restarts": restarts,
                               "failures": failures, "nodes": info.get("NodeList"), "cause": cause,
                               "message": msg})
        return rc
    action = decide(rc, restarts=restarts, failures=failures, max_requeues=max_requeues, retries=retries)
    causes = _failure_causes(info, rc) if action in ("retry", "give_up") and rc != exit_codes.REQUEUE else []
    event = {"time": time.time(), "job": job, "rc": rc, "action": action, "restarts": restarts,
             "failures": failures, "nodes": info.get("NodeList"), "cause": causes[0] if causes else None,
             "causes": causes}
    if action == "done":
        return exit_codes.OK
    cause = f" ({'; '.join(causes)})" if causes else ""
    if action == "requeue":
        msg = (f"lakd: job {job} checkpointed after a preemption/time-limit signal: requeue "
               f"{restarts - failures + 1} of at most {max_requeues}; it resumes from the newest checkpoint")
    elif action == "retry":
        new = _FAILURES.sub("", comment).strip(",; ")
        new = ",".join(x for x in (new, f"lakd_failures={failures + 1}") if x)
        subprocess.run(["scontrol", "update", f"JobId={job}", f"Comment={new}"], check=False, timeout=60)
        msg = (f"lakd: job {job} failed with status {rc}{cause}: retry {failures + 1} of {retries}; "
               "it resumes from the newest complete checkpoint")
    else:
        if rc == exit_codes.REQUEUE:
            reason = f"requeued {restarts - failures} times already"
        elif rc in FINAL_STATUSES:
            reason = "a retry would fail the same way (bad input or diverged loss, see the log)"
        else:
            reason = f"failed {failures + 1} times ({retries} retries)"
        msg = f"lakd: job {job} ended with status {rc}{cause}; {reason}: not requeued"
    event["message"] = msg
    print(msg, file=sys.stderr, flush=True)
    _append_event(events, event)
    if action == "give_up":
        _block_dependants(job, events, f"failed for good (status {rc})")
        return rc
    r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        print(f"lakd: scontrol requeue {job} failed: {r.stderr.strip()}", file=sys.stderr, flush=True)
        return rc
    return exit_codes.OK


def _block_dependants(job: str, events: Optional[str], why: str) -> None:
    """A sweep job that failed for good: cancel the sweep's jobs waiting for it (lakd.sweep.state)."""
    if not events:
        return
    from lakd.sweep.state import block_dependants

    try:
        block_dependants(Path(events).parent, job, why, log=lambda m: print(f"lakd: {m}", file=sys.stderr,
                                                                           flush=True))
    except (OSError, ValueError, RuntimeError) as exc:  # the sweep's own files: report, never mask the status
        print(f"lakd: could not cancel the jobs waiting for {job}: {exc}", file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lakd.sweep.requeue", description=__doc__.splitlines()[0])
    ap.add_argument("--rc", type=int, required=True, help="exit status of the srun step")
    ap.add_argument("--max-requeues", type=int, default=50, help="requeues after preemption/time limit")
    ap.add_argument("--retries", type=int, default=2, help="requeues after a failure")
    ap.add_argument("--events", default=None, help="append one JSON line per decision to this file")
    args = ap.parse_args(argv)
    return after_step(args.rc, max_requeues=args.max_requeues, retries=args.retries, events=args.events)


if __name__ == "__main__":
    sys.exit(main())
