"""Checks before a sweep submits anything: every job it would submit can run.

- the runs directory (the sweep directory, or the nearest folder above it that exists) is a writable directory;
- every partition exists, and each job's nodes, GPUs, CPUs (tasks x CPUs per task), memory and time limit fit
  the nodes and limits of its partition (``sinfo``, ``scontrol show partition``); then the exact job script
  goes through ``sbatch --test-only`` (accounts, QOS, constraints, ``--slurm`` options);
- a probe step on a compute node (``srun --immediate``) finds a file the launcher just made in that directory
  and imports lakd with the jobs' python: a runs directory the nodes do not see, or a python they do not have,
  would make every job die at start.

The first problem found raises :class:`PreflightError` (one line naming it); nothing is submitted or
recorded then. The probe leaves nothing behind (its file is removed); ``probe=False`` skips it.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from lakd.sweep.spec import Resources, time_minutes

PROBE_WAIT_S = 60  # how long the probe may wait for a free node before the check is skipped (with a warning)


class PreflightError(ValueError):
    """A sweep that cannot run as asked; the message is one line naming the problem."""


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------ runs directory
def existing_base(path: Path) -> Path:
    """``path`` or the nearest folder above it that exists (where the sweep directory will be made)."""
    path = Path(path).absolute()
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_runs_dir(sweep_dir: Path) -> Path:
    """The sweep directory can be made and written; returns the existing folder it was checked in."""
    base = existing_base(sweep_dir)
    for p in (sweep_dir, sweep_dir / ".sweep"):
        if os.path.lexists(p) and not p.is_dir():
            raise PreflightError(f"runs_dir: {p} exists and is not a directory")
    if not base.is_dir():
        raise PreflightError(f"runs_dir: {base} is not a directory (the sweep directory {sweep_dir} goes below it)")
    for p in (base, sweep_dir / ".sweep"):
        if not p.is_dir():
            continue
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            raise PreflightError(f"runs_dir: {p} is on a read-only file system")
        if not os.access(p, os.W_OK | os.X_OK):
            raise PreflightError(f"runs_dir: {p} is not writable (permission denied or immutable)")
    return base


# ------------------------------------------------------------------------------------------------ cluster
@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass
class Partition:
    name: str
    nodes: list[Node] = field(default_factory=list)
    max_nodes: Optional[int] = None
    max_time_min: Optional[float] = None


def _gpus(gres: str) -> int:
    """GPUs in a gres string: ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8`` -> 2, 4, 2."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def read_partitions(run: Runner = _run) -> dict[str, Partition]:
    """Every partition with its nodes (CPUs, memory, GPUs) and limits."""
    r = run(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"])
    if r.returncode != 0:
        raise PreflightError(f"sinfo failed: {(r.stderr or r.stdout).strip()}")
    parts: dict[str, Partition] = {}
    for line in r.stdout.splitlines():
        bits = line.split("|")
        if len(bits) < 5:
            continue
        node, part, cpus, mem, gres = bits[:5]
        part = part.rstrip("*")
        try:
            n = Node(node, int(cpus.rstrip("+")), int(mem.rstrip("+")), _gpus(gres))
        except ValueError:
            continue
        parts.setdefault(part, Partition(part)).nodes.append(n)
    r = run(["scontrol", "show", "partition", "-o"])
    for line in r.stdout.splitlines() if r.returncode == 0 else []:
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        p = parts.setdefault(fields.get("PartitionName", "?"), Partition(fields.get("PartitionName", "?")))
        if fields.get("MaxNodes", "UNLIMITED").isdigit():
            p.max_nodes = int(fields["MaxNodes"])
        max_time = fields.get("MaxTime", "UNLIMITED")
        if max_time not in ("UNLIMITED", "INFINITE", ""):
            try:
                p.max_time_min = time_minutes(max_time)
            except ValueError:
                pass
    return parts


def check_fit(r: Resources, parts: dict[str, Partition], what: str) -> None:
    """``r`` (one job's resources) fits its partition; ``what`` names the jobs for the message."""
    part = parts.get(r.partition)
    if part is None:
        raise PreflightError(f"partition {r.partition!r} ({what}) does not exist on this cluster "
                             f"(partitions: {', '.join(sorted(parts)) or 'none'})")
    cpus = r.tasks * r.cpus_per_task
    mem = None if r.mem_gb is None else r.mem_gb * 1024
    if r.nodes > len(part.nodes):
        raise PreflightError(f"nodes {r.nodes} ({what}): partition {r.partition} has only {len(part.nodes)} node(s)")
    if part.max_nodes is not None and r.nodes > part.max_nodes:
        raise PreflightError(f"nodes {r.nodes} ({what}): partition {r.partition} allows at most {part.max_nodes} "
                             "per job")
    if part.max_time_min is not None and time_minutes(r.time) > part.max_time_min:
        raise PreflightError(f"time {r.time} ({what}): partition {r.partition} allows at most "
                             f"{part.max_time_min:g} minutes")
    checks = [("gpus_per_node", r.gpus_per_node, lambda n: n.gpus, "GPU(s)"),
              ("tasks_per_node x cpus_per_task", cpus, lambda n: n.cpus, "CPUs"),
              ("mem_gb", mem, lambda n: n.mem_mb, "MB of memory")]
    for name, need, have, unit in checks:
        if need is not None and need > max(have(n) for n in part.nodes):
            if name == "mem_gb":
                shown = f"{r.mem_gb:g}"
            elif name == "gpus_per_node":
                shown = f"{need}"
            else:
                shown = f"{r.tasks} x {r.cpus_per_task} = {need}"
            raise PreflightError(f"{name} {shown} ({what}): the nodes of partition {r.partition} have at most "
                                 f"{max(have(n) for n in part.nodes)} {unit}")
    fit = [n for n in part.nodes if n.gpus >= r.gpus_per_node and n.cpus >= cpus and (mem is None or n.mem_mb >= mem)]
    if len(fit) < r.nodes:
        raise PreflightError(f"nodes {r.nodes} ({what}): only {len(fit)} node(s) of partition {r.partition} have "
                             f"{r.gpus_per_node} GPU(s), {cpus} CPUs" + ("" if mem is None else f" and {mem:g} MB")
                             + " each")


def sbatch_test_only(script: str, what: str, run: Runner = _run) -> None:
    """``sbatch --test-only`` on the job script (Slurm's own verdict: accounts, QOS, constraints, options)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="lakd-preflight-") as f:
        f.write(script)
        f.flush()
        r = run(["sbatch", "--test-only", f.name])
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        msg = "; ".join(dict.fromkeys(ln.replace("sbatch: error: ", "") for ln in lines)) or f"status {r.returncode}"
        raise PreflightError(f"Slurm refuses the job script of the {what}: {msg}")


# -------------------------------------------------------------------------------------------------- probe
def probe_node(base: Path, r: Resources, python: str = sys.executable, run: Runner = _run,
               log: Callable[[str], None] = print, wait_s: int = PROBE_WAIT_S) -> None:
    """One task on a compute node of ``r``'s partition must see a file made here in ``base`` and import lakd."""
    fd, token = tempfile.mkstemp(prefix=".lakd-probe-", dir=base)
    os.close(fd)
    try:
        code = ("import os, sys, lakd.sweep.batch; p = sys.argv[1]; "
                "sys.exit(0 if os.path.exists(p) and os.access(os.path.dirname(p), os.W_OK) else 3)")
        cmd = ["srun", f"--immediate={wait_s}", f"--partition={r.partition}", "--nodes=1", "--ntasks=1",
               "--cpus-per-task=1", "--time=2", "--job-name=lakd-probe", "--quiet"]
        cmd += [f"--{k}={getattr(r, k)}" for k in ("account", "qos") if getattr(r, k)]
        cmd += [python, "-c", code, token]
        res = run(cmd, timeout=wait_s + 120)
    finally:
        os.unlink(token)
    if res.returncode == 0:
        return
    out = (res.stderr + res.stdout).strip()
    if "Immediate execution impossible" in out or "Unable to allocate resources" in out:
        log(f"warning: could not check {base} from a compute node (no node of partition {r.partition} free within "
            f"{wait_s} s); the jobs fail at start if the nodes do not see it")
        return
    if res.returncode == 3:
        raise PreflightError(f"runs_dir: {base} is not visible (or not writable) from the compute nodes of "
                             f"partition {r.partition}: put runs_dir on storage they share")
    last = out.splitlines()[-1] if out else f"status {res.returncode}"
    raise PreflightError(f"probe step on partition {r.partition} failed: {last} "
                         f"(the jobs run {shlex.quote(python)} -m lakd... there)")


# ---------------------------------------------------------------------------------------------- together
def preflight(sweep_dir: Path, groups: Iterable[tuple[str, Resources, Optional[str]]], *, probe: bool = True,
              python: str = sys.executable, run: Runner = _run, log: Callable[[str], None] = print) -> None:
    """Run every check; ``groups`` are ``(what, resources, job script or None)`` of the jobs to submit."""
    base = check_runs_dir(sweep_dir)
    groups = list(groups)
    if not groups:
        return
    parts = read_partitions(run)
    for what, r, _ in groups:
        check_fit(r, parts, what)
    for what, _, script in groups:
        if script is not None:
            sbatch_test_only(script, what, run)
    if probe:
        small = min((r for _, r, _ in groups), key=lambda r: (r.gpus_per_node, r.nodes))
        probe_node(base, dataclasses.replace(small), python, run, log)
