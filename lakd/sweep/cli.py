"""Command line of the sweep launcher (``python launchers/sweep.py``).

    python launchers/sweep.py --partition gpu [--sweep FILE|NAME] [--nodes N] [--gpus-per-node G] [--time T]
                              [--dry-run] [--executor slurm|local|auto] [--wait]
    python launchers/sweep.py status  [--sweep ...]
    python launchers/sweep.py collect [--sweep ...]

Running the same sweep again skips finished jobs, resumes unfinished ones and never submits a second copy of
a job that is still queued or running.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from lakd.sweep.spec import list_sweeps

STATE_ORDER = ("running", "pending", "failed", "partial", "todo", "done")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python launchers/sweep.py",
        description="Sweep datasets x teacher/student pairs as a DAG of Slurm job arrays (or locally).",
        epilog=f"shipped sweeps: {', '.join(list_sweeps())} (lakd/sweeps/<name>.yaml). Sub-commands: "
               "status (state of every job), collect (write results.md/.csv now).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=("run", "status", "collect"),
                   help="run (default): submit or run the sweep; status; collect")
    p.add_argument("--sweep", default="paper", help="sweep file or shipped sweep name (default: paper)")
    p.add_argument("--runs-dir", default=None, help="override the sweep file's runs_dir (sweep dir = RUNS/NAME)")
    p.add_argument("--sweep-dir", default=None, help="put the sweep exactly here instead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every stage, e.g. --set train.iters=1000 (repeatable)")
    p.add_argument("--executor", default="auto", choices=("auto", "slurm", "local"),
                   help="slurm: submit with submitit; local: run here without Slurm; auto (default): slurm "
                        "when sbatch is on PATH")
    p.add_argument("--dry-run", action="store_true", help="print the plan (jobs, arrays, dependencies, "
                                                          "resources) and submit nothing")
    p.add_argument("--wait", action="store_true", help="slurm: wait until the sweep's jobs ended; the exit "
                                                       "status says whether everything finished")
    p.add_argument("--wait-timeout", type=float, default=None, help="seconds --wait waits at most")
    p.add_argument("--procs", type=int, default=1, help="local executor: processes per stage (default 1)")
    g = p.add_argument_group("resources (override the sweep file's `resources`)")
    g.add_argument("--partition")
    g.add_argument("--cpu-partition", help="partition of the shard and collect jobs (default: --partition)")
    g.add_argument("--nodes", type=int)
    g.add_argument("--gpus-per-node", type=int, help="one task per GPU; 0: CPU tasks (--tasks-per-node)")
    g.add_argument("--tasks-per-node", type=int)
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem-gb", type=float)
    g.add_argument("--time", help="time limit of one run of a job, e.g. 24:00:00 (it requeues and resumes)")
    g.add_argument("--signal-delay", dest="signal_delay_s", type=int,
                   help="seconds before the time limit at which jobs checkpoint and requeue")
    g.add_argument("--array-parallelism", type=int)
    g.add_argument("--retries", type=int, help="requeues of a job after a failure")
    g.add_argument("--max-requeues", type=int, help="requeues of a job after preemption / time limit")
    g.add_argument("--account")
    g.add_argument("--qos")
    return p


RESOURCE_ARGS = ("partition", "cpu_partition", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task",
                 "mem_gb", "time", "signal_delay_s", "array_parallelism", "retries", "max_requeues", "account", "qos")


def _spec(args):
    from lakd.config import parse_value
    from lakd.sweep.spec import load_spec

    spec = load_spec(args.sweep, {"runs_dir": args.runs_dir} if args.runs_dir else None)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.iters=1000")
        spec.overrides[key.strip()] = parse_value(value)
    return spec


def print_status(states: dict, out=print) -> dict[str, int]:
    counts: dict[str, int] = {}
    width = max((len(k) for k in states), default=10)
    out(f"{'JOB':<{width}}  {'STATE':<8} {'SLURM ID':<12} DETAIL")
    for key, st in states.items():
        counts[st.state] = counts.get(st.state, 0) + 1
        out(f"{key:<{width}}  {st.state:<8} {st.slurm_id or '-':<12} {st.detail}")
    out("total: " + ", ".join(f"{counts[s]} {s}" for s in STATE_ORDER if s in counts))
    return counts


def wait(plan, timeout: Optional[float] = None, poll_s: float = 5.0, out=print) -> bool:
    """Poll until none of the plan's jobs is queued or running; True when every job finished."""
    from lakd.sweep.state import job_states

    t0 = time.monotonic()
    seen: dict[str, str] = {}
    while True:
        states = job_states(plan)
        for key, st in states.items():
            if seen.get(key) != st.state:
                if key in seen:
                    out(f"[{time.monotonic() - t0:7.1f}s] {key}: {seen[key]} -> {st.state} {st.detail}".rstrip())
                seen[key] = st.state
        if not any(st.active for st in states.values()):
            return all(st.state == "done" for st in states.values())
        if timeout is not None and time.monotonic() - t0 > timeout:
            out(f"--wait: gave up after {timeout:.0f} s")
            return False
        time.sleep(poll_s)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from lakd.sweep import make_plan, run_sweep
    from lakd.sweep.collect import write_results
    from lakd.sweep.state import job_states

    resources = {k: getattr(args, k) for k in RESOURCE_ARGS}
    try:
        spec = _spec(args)
        if args.command == "status":
            print_status(job_states(make_plan(spec, sweep_dir=args.sweep_dir, **resources)))
            return 0
        if args.command == "collect":
            plan = make_plan(spec, sweep_dir=args.sweep_dir, **resources)
            files = write_results(plan.describe(), plan.sweep_dir)
            print((plan.sweep_dir / "results.md").read_text())
            print("written: " + ", ".join(str(p) for p in files.values()))
            return 0
        report = run_sweep(spec, args.executor, dry_run=args.dry_run, procs=args.procs, sweep_dir=args.sweep_dir,
                           **resources)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    if hasattr(report, "ok"):  # local executor
        for f in report.results.values():
            print(f"written: {f}")
        return 0 if report.ok else 1
    if args.wait:
        plan = make_plan(spec, sweep_dir=args.sweep_dir, **resources)
        ok = wait(plan, args.wait_timeout)
        print_status(job_states(plan))
        return 0 if ok else 1
    return 0
