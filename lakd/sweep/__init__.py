"""Sweeps: datasets x teacher/student pairs (+ baselines, seeds) as a DAG of jobs, on Slurm or locally.

    from lakd.sweep import run_sweep, sweep_status, collect
    run_sweep("tiny", executor="local")                  # the demo path: same DAG, this machine
    run_sweep("paper", executor="slurm", partition="gpu", nodes=2)   # submit and return
    sweep_status("paper"); collect("paper")

A sweep file (:mod:`lakd.sweep.spec`) becomes a plan (:mod:`lakd.sweep.plan`): shard jobs for missing
shards, one teacher per dataset x teacher, students and baselines depending on their teacher, a final collect
job. :mod:`lakd.sweep.slurm` submits it with submitit (arrays, afterok dependencies, requeue on preemption and
retries on failure via :mod:`lakd.sweep.requeue`); :mod:`lakd.sweep.local` runs it here. Both are idempotent:
finished jobs are skipped, unfinished ones resume from their checkpoints, queued ones are never duplicated.
The command line is ``lakd sweep`` (lakd.sweep.cli; ``python launchers/sweep.py`` in a checkout).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Union

from lakd.sweep.plan import Job, Plan, build_plan
from lakd.sweep.spec import Resources, SweepSpec, check_resources, list_sweeps, load_spec

SpecLike = Union[SweepSpec, str, Path, dict]
RESOURCE_KEYS = {f.name for f in dataclasses.fields(Resources)}

__all__ = ["Job", "Plan", "Resources", "SweepSpec", "build_plan", "collect", "list_sweeps", "load_spec",
           "make_plan", "run_sweep", "sweep_status"]


def make_plan(spec: SpecLike, *, sweep_dir: Optional[Union[str, Path]] = None, runs_dir: Optional[str] = None,
              executor: str = "slurm", procs: int = 1, cwd: Optional[Union[str, Path]] = None,
              source: Optional[dict] = None, **resources: Any) -> Plan:
    """Load ``spec`` (a SweepSpec, a shipped sweep name, a path or a mapping), apply resource overrides
    (``partition``, ``nodes``, ``gpus_per_node``, ``time``, ... : they win over the file, ``per_stage``
    included) and build its plan. ``executor="local"`` sizes the stages for ``procs`` local processes.
    Relative paths of the sweep are taken from ``cwd`` (default: the current directory). ``source``: how to
    build the plan again (lakd.sweep.locate), recorded with the sweep's state."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, {"runs_dir": runs_dir} if runs_dir else None)
    elif runs_dir:
        spec = dataclasses.replace(spec, runs_dir=runs_dir)
    unknown = sorted(set(resources) - RESOURCE_KEYS)
    if unknown:
        raise ValueError(f"unknown resource {unknown[0]!r}; resources: {', '.join(sorted(RESOURCE_KEYS))}")
    given = {k: v for k, v in resources.items() if v is not None}
    if given:
        res = dict(dataclasses.asdict(spec.resources), **given)
        res["per_stage"] = {s: {k: v for k, v in d.items() if k not in given} for s, d in res["per_stage"].items()}
        where = f"{spec.source or '<mapping>'} with {', '.join(given)} overridden"
        spec = dataclasses.replace(spec, resources=check_resources(res, "resources", where))
    world = (lambda r: procs) if executor == "local" else None
    plan = build_plan(spec, sweep_dir=Path(sweep_dir) if sweep_dir else None, world_size=world,
                      cwd=Path(cwd) if cwd else None)
    plan.source = source
    return plan


def run_sweep(spec: SpecLike, executor: str = "local", *, dry_run: bool = False, procs: int = 1,
              parallel: Optional[int] = None, sweep_dir: Optional[Union[str, Path]] = None,
              runs_dir: Optional[str] = None, log: Callable[[str], None] = print, probe: bool = True,
              source: Optional[dict] = None, **resources: Any):
    """Run or submit a sweep. ``executor``: ``local`` (this machine, returns a LocalReport when done),
    ``slurm`` (submit with submitit and return a SubmitReport at once) or ``auto`` (slurm when sbatch is on
    PATH). ``dry_run`` runs the checks (Slurm: all but the probe from a compute node), prints the plan and changes
    nothing. Slurm: nothing is submitted unless every job can run (lakd.sweep.preflight; ``probe=False`` skips
    its check from a compute node). Local: ``procs`` processes per
    stage, ``parallel`` stages at a time (default: as many as the CPU cores hold at ``procs`` each)."""
    from lakd.sweep.state import slurm_available

    if executor == "auto":
        executor = "slurm" if slurm_available() else "local"
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be local, slurm or auto, got {executor!r}")
    plan = make_plan(spec, sweep_dir=sweep_dir, runs_dir=runs_dir, executor=executor, procs=procs, source=source,
                     **resources)
    if executor == "slurm" or dry_run:
        from lakd.sweep.slurm import submit_plan

        return submit_plan(plan, dry_run=dry_run, log=log, probe=probe, cluster=executor == "slurm")
    from lakd.sweep.local import default_parallel, run_local

    if parallel is None:
        parallel = max(1, default_parallel() // max(1, procs))
    return run_local(plan, procs=procs, parallel=parallel, log=log)


def sweep_status(spec: SpecLike, *, sweep_dir: Optional[Union[str, Path]] = None, runs_dir: Optional[str] = None,
                 **resources: Any):
    """``{job key: JobState}`` of every job of the sweep (see lakd.sweep.state)."""
    from lakd.sweep.state import job_states

    return job_states(make_plan(spec, sweep_dir=sweep_dir, runs_dir=runs_dir, **resources))


def collect(spec: SpecLike, *, sweep_dir: Optional[Union[str, Path]] = None, runs_dir: Optional[str] = None,
            **resources: Any) -> dict[str, Path]:
    """Write the sweep's results table (``results.md``, ``results.csv``, ``results.json``) from what finished."""
    from lakd.sweep.collect import write_results

    plan = make_plan(spec, sweep_dir=sweep_dir, runs_dir=runs_dir, **resources)
    return write_results(plan.describe(), plan.sweep_dir)
