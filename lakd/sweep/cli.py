"""Command line of sweeps: ``lakd sweep`` (also ``python launchers/sweep.py`` in a checkout).

    lakd sweep [run] --partition gpu [--sweep FILE|NAME] [--nodes N] [--gpus-per-node G] [--time T]
                     [--slurm KEY=VALUE ...] [--dry-run] [--executor slurm|local|auto] [--wait]
    lakd sweep status  [PATH] [--sweep ...]   # PATH: the sweep directory or a folder in it (default: see below)
    lakd sweep collect [PATH] [--sweep ...]
    lakd sweep script [--out FILE]      # the stage batch script: sbatch "$(lakd sweep script)" --stage ...

Running the same sweep again skips finished jobs, resumes unfinished ones and never submits a second copy of
a job that is still queued or running. ``status`` and ``collect`` find the sweep from any directory: in PATH
(or ``--sweep-dir``) or a folder above it; else, without ``--sweep``/``--runs-dir``, in the current directory or a
folder above it; else at ``--sweep``'s place (runs_dir/name, default paper). Otherwise they say that there is no
sweep there (exit 2). The plan is built again from what the sweep's run recorded (lakd.sweep.locate).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from lakd import exit_codes
from lakd.sweep.spec import list_sweeps

STATE_ORDER = ("running", "requeued", "pending", "blocked", "failed", "incomplete", "partial", "todo", "done")
COMMANDS = ("run", "status", "collect", "script")
STAGE_SCRIPT = Path(__file__).resolve().parent / "stage.sh"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", nargs="?", default="run", choices=COMMANDS,
                   help="run (default): submit or run the sweep; status: the state of every job; collect: write "
                        "results.md/.csv now; script: print the path of the stage batch script")
    p.add_argument("path", nargs="?", default=None,
                   help="status, collect: the sweep directory or a folder inside it (default: --sweep's directory, "
                        "else the current directory or a folder above it)")
    p.add_argument("--sweep", default=None, help="sweep file or shipped sweep name (default: paper)")
    p.add_argument("--runs-dir", default=None, help="override the sweep file's runs_dir (sweep dir = RUNS/NAME)")
    p.add_argument("--sweep-dir", default=None, help="put the sweep exactly here instead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every stage, e.g. --set train.iters=1000 (repeatable)")
    p.add_argument("--executor", default="auto", choices=("auto", "slurm", "local"),
                   help="slurm: submit with submitit; local: run here without Slurm; auto (default): slurm "
                        "when sbatch is on PATH")
    p.add_argument("--dry-run", action="store_true",
                   help="check that every job can run (the checks before submitting, except the probe step on a "
                        "compute node), print the plan (jobs, arrays, dependencies, resources); write and submit "
                        "nothing")
    p.add_argument("--wait", action="store_true", help="slurm: wait until the sweep's jobs ended; jobs blocked "
                                                       "behind a job that failed for good are cancelled; the exit "
                                                       "status says whether everything finished")
    p.add_argument("--wait-timeout", type=float, default=None, help="seconds --wait waits at most")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="slurm: skip the check from a compute node that runs_dir is visible there")
    p.add_argument("--procs", type=int, default=1, help="local executor: processes per stage (default 1)")
    p.add_argument("--out", default=None, help="script: write a copy of the stage batch script here")
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
    g.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="any further submitit/sbatch parameter for every job (repeatable), e.g. --slurm "
                        "constraint=a100 --slurm exclusive=true --slurm reservation=r1 --slurm "
                        "signal=B:USR2@300")


def build_parser(prog: str = "python launchers/sweep.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Sweep datasets x teacher/student pairs as a DAG of Slurm job arrays (or locally).",
        epilog=f"shipped sweeps: {', '.join(list_sweeps())} (lakd/sweeps/<name>.yaml). Sub-commands: "
               "status (state of every job), collect (write results.md/.csv now), script (the stage batch "
               "script's path).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def register(subparsers) -> None:
    """``lakd sweep`` (lakd.cli's command table)."""
    p = subparsers.add_parser("sweep", help="sweeps of teacher/student pairs on Slurm (or locally)",
                              description=build_parser().description, epilog=build_parser().epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


DEFAULT_SWEEP = "paper"
RESOURCE_ARGS = ("partition", "cpu_partition", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task",
                 "mem_gb", "time", "signal_delay_s", "array_parallelism", "retries", "max_requeues", "account", "qos")


def parse_slurm_items(items: list[str]) -> dict:
    """``--slurm KEY=VALUE`` items: true/false -> flags, integers -> int, anything else a string."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"--slurm {item!r}: expected KEY=VALUE, e.g. constraint=a100 or exclusive=true")
        low = value.strip().lower()
        if low in ("true", "yes"):
            out[key] = True
        elif low.lstrip("-").isdigit():
            out[key] = int(low)
        else:
            out[key] = value
    return out


def _spec(args):
    from lakd.sweep.locate import spec_of

    return spec_of(args.sweep or DEFAULT_SWEEP, args.runs_dir, tuple(args.set))


def existing_plan(args, resources: dict):
    """The plan of the sweep ``status``/``collect`` read (see the module docstring); ValueError when none."""
    from lakd.sweep import make_plan
    from lakd.sweep.locate import find_sweep_dir, has_sweep, plan_at

    where = args.path or args.sweep_dir
    if where:
        found = find_sweep_dir(where)
        if found is None:
            raise ValueError(f"no sweep at {Path(where).absolute()} (no .sweep/plan.json there or in a folder "
                             "above it)")
        return plan_at(found, args.sweep, **resources)
    named = args.sweep is not None or args.runs_dir is not None
    if not named:
        here = find_sweep_dir(Path.cwd())
        if here is not None:
            return plan_at(here, **resources)
    plan = make_plan(_spec(args), **resources)
    if has_sweep(plan.sweep_dir):
        return plan_at(plan.sweep_dir, args.sweep, **resources)
    raise ValueError(f"no sweep {plan.spec.name!r} at {plan.sweep_dir}"
                     + ("" if named else f", and none in {Path.cwd()} or a folder above it")
                     + ": pass the sweep directory (lakd sweep status DIR)")


def print_status(states: dict, out=print) -> dict[str, int]:
    counts: dict[str, int] = {}
    width = max((len(k) for k in states), default=10)
    out(f"{'JOB':<{width}}  {'STATE':<10} {'SLURM ID':<12} DETAIL")
    for key, st in states.items():
        counts[st.state] = counts.get(st.state, 0) + 1
        out(f"{key:<{width}}  {st.state:<10} {st.slurm_id or '-':<12} {st.detail}")
    out("total: " + ", ".join(f"{counts[s]} {s}" for s in STATE_ORDER if s in counts))
    return counts


def wait(plan, timeout: Optional[float] = None, poll_s: float = 5.0, out=print) -> bool:
    """Poll until none of the plan's jobs can still run; True when every job finished. Jobs that wait for a job
    that ended for good (blocked) are cancelled on the way, the collect job included."""
    from lakd.sweep.state import cancel_blocked, job_states

    t0 = time.monotonic()
    seen: dict[str, str] = {}
    while True:
        states = job_states(plan)
        if cancel_blocked(plan, states, log=out):
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


def summary(states: dict, out=print) -> None:
    """What is left to do after a sweep ended without finishing, and how to go on."""
    bad = {s: [k for k, st in states.items() if st.state == s] for s in ("failed", "blocked", "incomplete",
                                                                          "partial", "todo")}
    for state, keys in bad.items():
        if keys:
            out(f"{state}: " + ", ".join(keys))
    if any(bad.values()):
        out("the sweep did not finish: fix the cause (see the DETAIL column and the jobs' logs in .sweep/logs/), "
            "then run the same command again: it resubmits exactly these jobs, behind their dependencies")


def write_script(out: Optional[str]) -> int:
    if out is None:
        print(STAGE_SCRIPT)
        return exit_codes.OK
    target = Path(out)
    if target.is_dir():
        target = target / STAGE_SCRIPT.name
    if not target.parent.is_dir():
        raise ValueError(f"--out {out}: folder {target.parent} does not exist")
    shutil.copyfile(STAGE_SCRIPT, target)
    target.chmod(0o755)
    print(target)
    return exit_codes.OK


def run(args: argparse.Namespace) -> int:
    """One sweep command (the parsed arguments of build_parser / ``lakd sweep``); returns the exit status."""
    from lakd.sweep import make_plan, run_sweep
    from lakd.sweep.collect import write_results
    from lakd.sweep.state import job_states

    resources = {k: getattr(args, k) for k in RESOURCE_ARGS}
    try:
        if args.path and args.command not in ("status", "collect"):
            raise ValueError(f"{args.path!r}: a sweep directory is given to status and collect only (run takes "
                             "--sweep-dir)")
        if args.command == "script":
            return write_script(args.out)
        if args.slurm:
            resources["additional"] = parse_slurm_items(args.slurm)
        if args.command in ("status", "collect"):
            plan = existing_plan(args, resources)
            spec = plan.spec
            if args.command == "status":
                states = job_states(plan)
                print(f"sweep {spec.name} in {plan.sweep_dir}")
                print_status(states)
                return exit_codes.OK
            files = write_results(plan.describe(), plan.sweep_dir)
            print((plan.sweep_dir / "results.md").read_text())
            print("written: " + ", ".join(str(p) for p in files.values()))
            return exit_codes.OK
        from lakd.sweep.locate import recipe

        spec = _spec(args)
        if args.slurm:
            resources["additional"] = {**spec.resources.additional, **resources["additional"]}
        report = run_sweep(spec, args.executor, dry_run=args.dry_run, procs=args.procs, sweep_dir=args.sweep_dir,
                           probe=args.probe, source=recipe(args.sweep or DEFAULT_SWEEP, args.runs_dir,
                                                           tuple(args.set)), **resources)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    if args.dry_run:
        return exit_codes.OK
    if hasattr(report, "ok"):  # local executor
        for f in report.results.values():
            print(f"written: {f}")
        return exit_codes.OK if report.ok else exit_codes.FAILED
    if args.wait:
        plan = make_plan(spec, sweep_dir=args.sweep_dir, **resources)
        ok = wait(plan, args.wait_timeout)
        states = job_states(plan)
        print_status(states)
        if not ok:
            summary(states)
        return exit_codes.OK if ok else exit_codes.FAILED
    return exit_codes.OK


def main(argv: Optional[list[str]] = None) -> int:
    return run(build_parser().parse_args(argv))
