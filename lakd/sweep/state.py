"""Where each job of a sweep stands: finished on disk, queued or running in Slurm, failed, resumable, to do.

The disk is the truth for "finished" (``result.json`` of a stage, the manifests of a shard job, a results table
newer than every result for collect); Slurm (``squeue``, then ``sacct``) tells about jobs recorded in
``<sweep>/.sweep/jobs.json``, which holds every job id the sweep submitted; ``events.jsonl`` adds what the jobs'
batch steps decided (requeue, retry, give up), restarts by Slurm itself, and jobs cancelled as ``blocked``
(they waited for a job that ended for good: :func:`block_dependants`, :func:`cancel_blocked`).
"""
from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from lakd.engine.runlock import lock_holder
from lakd.io import atomic_write_text
from lakd.rundir import StageDir
from lakd.sweep.plan import Job, Plan

DEAD_DEPENDENCY = "DependencyNeverSatisfied"
# sacct states of jobs that left the queue (squeue's are PENDING, RUNNING, COMPLETING, ...)
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "REVOKED"}


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``path`` atomically (lakd.io): readers never see a half-written file; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def append_event(path: Path, event: dict) -> None:
    """One JSON line in ``events.jsonl``: a single short write, so appends from several jobs stay whole lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


# --------------------------------------------------------------------------------------------- records
class Records:
    """``<sweep>/.sweep/jobs.json``: job key -> every Slurm job id submitted for it (newest last)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "jobs.json"
        self.data: dict[str, list[dict]] = {}
        if self.path.exists():
            self.data = json.loads(self.path.read_text()).get("jobs", {})

    def latest(self, key: str) -> Optional[str]:
        entries = self.data.get(key) or []
        return entries[-1]["id"] if entries else None

    def add(self, key: str, slurm_id: str, **extra) -> None:
        self.data.setdefault(key, []).append({"id": str(slurm_id), "time": time.time(), **extra})

    def key_of(self, slurm_id: str) -> Optional[str]:
        """The job key ``slurm_id`` was submitted for (an array task ``12_3`` as recorded)."""
        for key, entries in self.data.items():
            if any(e["id"] == slurm_id for e in entries):
                return key
        return None

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps({"jobs": self.data}, indent=1))


@contextlib.contextmanager
def sweep_lock(state_dir: Path, what: str) -> Iterator[None]:
    """One launcher at a time per sweep (two concurrent runs could submit the same job twice)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RuntimeError(f"another launcher is working on this sweep ({f.read().strip() or 'unknown'}); "
                               f"lock file {state_dir / 'lock'}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{what} pid {os.getpid()} on {os.uname().nodename}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def holder_text(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"


# ---------------------------------------------------------------------------------------- slurm queries
def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


@dataclass
class SlurmJob:
    id: str
    state: str
    reason: str = ""
    nodes: str = ""
    exit_code: str = ""
    comment: str = ""
    restarts: int = 0  # times Slurm started it again (requeues), from squeue's RestartCnt


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


# squeue's fields, each followed by "|" (RestartCnt has no `-o` letter); JobArrayID: `12_3` for an array task
# (JobID is the task's own number), a plain job's id otherwise; the comment last, it may hold a "|"
_SQUEUE_FIELDS = ("JobArrayID", "State", "Reason", "NodeList", "RestartCnt", "Comment")


def squeue(ids: Optional[set[str]] = None) -> dict[str, SlurmJob]:
    """This user's queued/running jobs, one line per array task (``12_3``), restricted to ``ids`` if given."""
    out = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-O", ",".join(f"{f}:|" for f in _SQUEUE_FIELDS)])
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|", len(_SQUEUE_FIELDS) - 1)
        if len(parts) < len(_SQUEUE_FIELDS):
            continue
        jid, state, reason, nodes, restarts, comment = parts
        if ids is None or jid in ids:
            jobs[jid] = SlurmJob(jid, state, reason, nodes, comment=comment.removesuffix("|"),
                                 restarts=int(restarts) if restarts.isdigit() else 0)
    return jobs


def sacct(ids: set[str]) -> dict[str, SlurmJob]:
    """Final states of ended jobs (accounting); empty when accounting is off."""
    if not ids or shutil.which("sacct") is None:
        return {}
    base = sorted({i.split("_")[0] for i in ids})
    try:
        out = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(base), "-o", "JobID,State,ExitCode,NodeList"])
    except RuntimeError:
        return {}
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or parts[0] not in ids:
            continue
        jobs[parts[0]] = SlurmJob(parts[0], parts[1].split()[0], "", parts[3], parts[2])
    return jobs


# ------------------------------------------------------------------------------------------ job states
@dataclass
class JobState:
    job: Job
    # done | pending | requeued (pending again after Slurm restarted it) | running | blocked | failed |
    # partial (checkpoint, no job) | todo
    state: str
    slurm_id: Optional[str] = None
    detail: str = ""
    slurm: Optional[SlurmJob] = None
    events: list[dict] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Queued or running and able to run (a blocked job may still sit in the queue)."""
        return self.state in ("pending", "requeued", "running")

    @property
    def queued(self) -> bool:
        """Still in Slurm's queue (squeue), whatever its state here."""
        return self.slurm is not None and self.slurm.state not in ENDED_STATES


def finished_on_disk(job: Job, plan: Plan) -> bool:
    if job.kind == "stage":
        return StageDir(job.stage_dir).finished
    if job.kind == "shards":
        return all(p.exists() for p in job.manifests())
    if job.kind == "collect":  # a table written after every planned stage finished
        table = plan.sweep_dir / "results.csv"
        results = [StageDir(j.stage_dir).result for j in plan.jobs.values() if j.kind == "stage"]
        if not table.exists() or not all(r.exists() for r in results):
            return False
        return table.stat().st_mtime >= max((r.stat().st_mtime for r in results), default=0)
    raise ValueError(job.kind)


def has_checkpoint(job: Job) -> bool:
    return job.kind == "stage" and StageDir(job.stage_dir).latest_pointer.exists()


def checkpoint_step(job: Job) -> Optional[int]:
    """Step of the newest complete checkpoint of a stage (its ``checkpoints/latest`` tag), None without one."""
    tag = StageDir(job.stage_dir).latest_checkpoint_tag() if job.kind == "stage" else None
    if tag is None:
        return None
    digits = "".join(c for c in tag if c.isdigit())
    return int(digits) if digits else None


def redo_note(job: Job) -> Optional[str]:
    """A stage whose result.json is gone but whose checkpoint is at its last step is only evaluated again, not
    retrained: say so, and how to retrain it."""
    step = checkpoint_step(job)
    iters = ((job.config or {}).get("train") or {}).get("iters")
    if step is None or not iters or step < iters or StageDir(job.stage_dir).finished:
        return None
    return (f"{job.key}: its checkpoint is at the last step ({step}/{iters}), so it is evaluated again, not "
            f"retrained; to retrain it, delete {job.stage_dir} first")


def progress(job: Job) -> str:
    """``step 120/300`` from the last line of the stage's metrics.jsonl (cheap: reads the file's tail)."""
    if job.kind != "stage":
        return ""
    path = StageDir(job.stage_dir).metrics
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    total = ((job.config or {}).get("train") or {}).get("iters")
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            return f"step {rec['step']}/{total}" if total else f"step {rec['step']}"
    return ""


def read_events(plan: Plan) -> dict[str, list[dict]]:
    """Requeue/retry events (lakd.sweep.requeue) by Slurm job id."""
    path = plan.state_dir / "events.jsonl"
    out: dict[str, list[dict]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(str(ev.get("job")), []).append(ev)
    return out


def job_states(plan: Plan, records: Optional[Records] = None, *,
               query_slurm: Optional[bool] = None) -> dict[str, JobState]:
    """The state of every job of the plan (see module docstring)."""
    records = records or Records(plan.state_dir)
    if query_slurm is None:
        query_slurm = slurm_available()
    latest = {k: records.latest(k) for k in plan.jobs}
    ids = {i for i in latest.values() if i}
    queued = squeue(ids) if (query_slurm and ids) else {}
    ended = sacct(ids - set(queued)) if (query_slurm and ids) else {}
    events = read_events(plan)
    out = {}
    for key, job in plan.jobs.items():
        sid = latest[key]
        st = JobState(job, "todo", sid, events=events.get(str(sid), []))
        if sid in queued:
            sj = queued[sid]
            st.slurm = sj
            st.state = "running" if sj.state in ("RUNNING", "COMPLETING", "CONFIGURING") else "pending"
            st.detail = sj.state.lower() if sj.state not in ("RUNNING", "PENDING") else ""
            if sj.state == "PENDING" and sj.reason and sj.reason != "None":
                st.detail = sj.reason
            if sj.nodes:
                st.detail = f"{st.detail} on {sj.nodes}".strip()
            if (sj.state == "PENDING" and sj.restarts) or sj.state.startswith("REQUEUE"):  # REQUEUE_HOLD, ...
                st.state = "requeued"
                why = sj.reason if sj.reason not in ("", "None") else sj.state.lower()
                st.detail = f"{_requeue_note(sj, st.events)}; waiting to run again ({why})"
        elif finished_on_disk(job, plan):
            st.state = "done"
        elif job.kind == "collect" and sid is not None and (plan.sweep_dir / "results.csv").exists() and (
                sid not in ended or ended[sid].state == "COMPLETED"):
            st.slurm = ended.get(sid)
            st.state = "incomplete"  # it ran and wrote the table of what had finished
            missing = [k for k, j in plan.jobs.items() if j.kind == "stage" and not StageDir(j.stage_dir).finished]
            st.detail = (f"missing: {', '.join(missing[:4])}" + (f" and {len(missing) - 4} more" if len(missing) > 4
                                                               else "")) if missing else "older than a result"
        elif job.kind == "stage" and (holder := lock_holder(job.stage_dir)) is not None:
            st.state = "running"  # no job in the queue, but a process holds the folder (a local sweep's stage)
            st.detail = holder_text(holder)
        elif sid in ended:
            st.slurm = ended[sid]
            st.state = "failed"
            st.detail = f"{ended[sid].state.lower()} (exit {ended[sid].exit_code})"
        elif has_checkpoint(job):
            st.state = "partial"
        elif sid is not None:
            st.state = "failed" if query_slurm else "todo"
            st.detail = "left the queue without finishing" if query_slurm else ""
        if st.events:
            last = st.events[-1]
            if last.get("action") == "blocked" and st.state in ("failed", "todo", "incomplete"):
                st.state, st.detail = "blocked", ""
            note = last.get("cause") or last.get("action")
            retries = sum(1 for e in st.events if e.get("action") == "retry")
            requeues = sum(1 for e in st.events if e.get("action") == "requeue")
            by_slurm = sum(1 for e in st.events if e.get("action") == "slurm_requeue")
            bits = [f"{requeues} requeue(s)" if requeues else "", f"{retries} retry(ies)" if retries else "",
                    f"{by_slurm} requeue(s) by Slurm" if by_slurm else "", f"last: {note}" if note else ""]
            st.detail = "; ".join(b for b in [st.detail] + bits if b)
        if st.state in ("running", "partial", "failed", "pending", "requeued"):
            prog = progress(job)
            if prog:
                st.detail = f"{prog}; {st.detail}".strip("; ")
        out[key] = st
    _mark_blocked(plan, out)
    return out


def _requeue_note(sj: SlurmJob, events: list[dict]) -> str:
    """A job pending again after a restart: who requeued it and, for Slurm's own requeues (recorded in the events
    only once the next attempt starts), why, from accounting (its previous attempt: node failure, preemption)."""
    ours = sum(1 for e in events if e.get("action") in ("requeue", "retry", "slurm_requeue"))
    if ours >= sj.restarts:
        return f"requeued (restart {sj.restarts})"
    from lakd.sweep.requeue import previous_attempt, restart_cause

    cause = restart_cause(previous_attempt(sj.id))  # "node failure on n2, requeued by Slurm", ...
    return f"restart {sj.restarts}: {cause}"


def _mark_blocked(plan: Plan, states: dict[str, JobState]) -> None:
    """A queued job that can never start as planned: Slurm says its dependency can never be satisfied, or one
    of the jobs it waits for ended without finishing (the collect job waits with ``afterany``)."""
    for key, st in states.items():  # topological order: a dependency's state is final when its dependant comes
        if st.state != "pending":
            continue
        dead = [d for d in st.job.deps if states[d].state in ("failed", "blocked", "partial", "todo")]
        if st.slurm and st.slurm.reason == DEAD_DEPENDENCY and not dead:
            dead = [d for d in st.job.deps if states[d].state != "done"] or ["a job it depends on"]
        if dead or (st.slurm and st.slurm.reason == DEAD_DEPENDENCY):
            st.state = "blocked"
            shown = ", ".join(dead[:3]) + (f" and {len(dead) - 3} more" if len(dead) > 3 else "")
            st.detail = f"waits for {shown}, which ended without finishing"


def block_dependants(state_dir: Path, failed: str, why: str, log=print) -> list[str]:
    """``failed`` (a job key or a Slurm id of this sweep) ended for good: cancel the sweep's queued jobs that
    wait for it, directly or not (the collect job included), and record a ``blocked`` event for each.
    Returns the keys blocked. The next run of the sweep submits them again behind a new ``failed`` job."""
    state_dir = Path(state_dir)
    records = Records(state_dir)
    key = failed if failed in records.data else records.key_of(failed)
    plan_file = state_dir / "plan.json"
    if key is None or not plan_file.exists():
        return []
    deps = {j["key"]: j["deps"] for j in json.loads(plan_file.read_text())["jobs"]}
    blocked: list[str] = []
    frontier = [key]
    while frontier:
        cur = frontier.pop()
        for k, d in deps.items():
            if cur in d and k not in blocked:
                blocked.append(k)
                frontier.append(k)
    ids = {k: records.latest(k) for k in blocked if records.latest(k)}
    queued = squeue(set(ids.values())) if ids and slurm_available() else {}
    cancel = {k: i for k, i in ids.items() if i in queued}
    if not cancel:
        return []
    subprocess.run(["scancel", *cancel.values()], check=False, timeout=120)
    for k, i in cancel.items():
        append_event(state_dir / "events.jsonl", {"time": time.time(), "job": i, "key": k, "action": "blocked",
                                                  "cause": f"blocked: {key} {why}"})
    log(f"cancelled {len(cancel)} job(s) waiting for {key} ({', '.join(cancel)}); they are submitted again by "
        "the next run of the sweep")
    return list(cancel)


def cancel_blocked(plan: Plan, states: dict[str, JobState], log=print) -> list[str]:
    """Cancel the queued jobs of ``states`` that are blocked (they wait for a job that ended for good) and record
    why; the next run of the sweep submits them again. Returns their keys."""
    stuck = {k: st for k, st in states.items() if st.state == "blocked" and st.queued and st.slurm_id}
    if not stuck:
        return []
    subprocess.run(["scancel", *[st.slurm_id for st in stuck.values()]], check=False, timeout=120)
    for key, st in stuck.items():
        append_event(plan.state_dir / "events.jsonl", {"time": time.time(), "job": st.slurm_id, "key": key,
                                                       "action": "blocked", "cause": f"blocked: {st.detail}"})
    log(f"cancelled {len(stuck)} blocked job(s): {', '.join(stuck)}; the next run of the sweep submits them "
        "again behind new jobs")
    return list(stuck)
