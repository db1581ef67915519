"""Submit a sweep's plan to Slurm with submitit, as a DAG of job arrays.

- Jobs already finished on disk are skipped; jobs still queued or running (recorded ids found in ``squeue``) are
  not submitted again, and new jobs depend on them; everything else is (re)submitted and resumes from its run
  directory. A queued job that is blocked (it waits for a job that ended for good) is cancelled and submitted
  again behind the new job, and a queued collect job is replaced by one that waits for the new jobs too.
- Nothing is submitted, cancelled or written before every job to submit passed lakd.sweep.preflight.
- Jobs of one level (shards; teachers; students + baselines; collect) with the same resources and the same
  dependencies form one Slurm array whatever their stage (``--array=0-N%array_parallelism``); students depend
  (``afterok``) on their teacher's job or array task, the collect job on everything (``afterany``).
- Training jobs run one task per GPU over ``nodes`` nodes (submitit's srun), ``--requeue``, USR2 ``signal_delay_s``
  before the time limit. Their batch step is lakd.sweep.batch (submitit's ``srun`` line becomes it): USR1/USR2
  sent to the batch step reach the tasks, and afterwards the job is requeued after a preemption or, up to
  ``retries`` times, a failure (lakd.sweep.requeue). srun's ``--wait`` ends the surviving ranks when one dies.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lakd.sweep.plan import Job, Plan, dependency_depths
from lakd.sweep.spec import Resources, time_minutes
from lakd.sweep.state import Records, redo_note, job_states, slurm_available, sweep_lock, write_text_atomic


def level(job: Job) -> int:
    if job.kind == "shards":
        return 0
    if job.kind == "collect":
        return 3
    return 1 if any(r.startswith("teacher") for r in job.roles) else 2


@dataclass
class Group:
    """Jobs submitted together as one Slurm job (one job) or array (several)."""

    level: int
    kind: str
    stage: Optional[str]
    resources: Resources
    dependency: str  # sbatch --dependency value ("" = none)
    after: list[str] = field(default_factory=list)  # keys of the jobs it waits for
    jobs: list[Job] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


@dataclass
class SubmitReport:
    skipped_done: list[str] = field(default_factory=list)
    skipped_active: list[tuple[str, str]] = field(default_factory=list)  # (key, slurm id)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)

    @property
    def submitted(self) -> list[tuple[str, str]]:
        return [(j.key, i) for g in self.groups for j, i in zip(g.jobs, g.ids)]


def _resources_key(job: Job) -> str:
    r = job.resources
    # not the stage: sibling cells of different stages (a label-assisted and an image-only teacher) that share
    # resources and dependencies form one array too
    return json.dumps(r.__dict__, sort_keys=True, default=str) + f"|{job.kind}"


def _job_resources(job: Job) -> Resources:
    """Shard and collect jobs: one task on one node of the CPU partition, no GPU, with the sweep file's
    ``per_stage.shards`` / ``per_stage.collect`` (e.g. a short time limit)."""
    if job.kind == "stage":
        return job.resources
    r = job.resources.for_stage(job.kind)
    return dataclasses.replace(r, partition=r.cpu_partition or r.partition, nodes=1, gpus_per_node=0,
                               tasks_per_node=1, per_stage={})


# submitit parameters lakd sets itself (a --slurm KEY=VALUE of these would break the job's wiring)
MANAGED = {"setup", "teardown", "srun_args", "use_srun", "dependency", "array_parallelism", "additional_parameters",
           "job_name", "signal_delay_s", "stderr_to_stdout", "num_gpus"}


def slurm_parameters(additional: dict) -> tuple[dict, dict]:
    """Split ``resources.additional`` / ``--slurm KEY=VALUE`` into submitit's own Slurm parameters (passed as
    ``slurm_<key>``: constraint, exclusive, gres, nodelist, mem_per_gpu, ...) and any other sbatch option
    (``slurm_additional_parameters``: ``#SBATCH --key=value``, e.g. reservation, signal)."""
    from submitit.slurm.slurm import SlurmExecutor

    named = set(SlurmExecutor._valid_parameters()) - MANAGED
    params, extra = {}, {}
    for key, value in additional.items():
        k = str(key).replace("-", "_")
        if k in named:
            params[f"slurm_{k}"] = value
        else:
            extra[k] = value
    return params, extra


def batch_step_line(plan: Plan, r: Resources, python: str = sys.executable) -> str:
    """A shell function that turns submitit's ``srun ...`` line into the lakd batch step (lakd.sweep.batch:
    signals to the batch step reach the tasks, then the requeue decision)."""
    cmd = " ".join(shlex.quote(x) for x in (
        python, "-m", "lakd.sweep.batch", "--max-requeues", str(r.max_requeues), "--retries", str(r.retries),
        "--events", str(plan.state_dir / "events.jsonl"), "--"))
    return f'srun() {{ exec {cmd} srun "$@"; }}'


def log_dir(plan: Plan) -> Path:
    """Every job's logs (``<id>_0_log.out/.err``): one folder made before submitting, so that a job that starts
    at once, or dies at once, has its log (Slurm does not create the folder of ``--output``)."""
    return plan.state_dir / "logs"


def make_executor(plan: Plan, group: Group, python: str = sys.executable, make_dirs: bool = True):
    """The submitit executor of one group (resources, dependency, batch step)."""
    import submitit

    r = _job_resources(group.jobs[0])
    if make_dirs:
        log_dir(plan).mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=log_dir(plan), cluster="slurm", slurm_max_num_timeout=r.max_requeues)
    stages = {j.stage for j in group.jobs}
    what = (stages.pop() if len(stages) == 1 else "stage") if group.kind == "stage" else group.kind
    named, extra = slurm_parameters(r.additional)
    additional = {"requeue": True, **extra}
    if group.dependency:
        additional["dependency"] = group.dependency
    params = dict(
        name=f"lakd-{plan.spec.name}-{what}", timeout_min=max(1, int(round(time_minutes(r.time)))),
        nodes=r.nodes, tasks_per_node=r.tasks, cpus_per_task=r.cpus_per_task,
        slurm_partition=r.partition, slurm_signal_delay_s=r.signal_delay_s,
        slurm_array_parallelism=r.array_parallelism, slurm_additional_parameters=additional,
        slurm_srun_args=[f"--wait={r.srun_wait_s}"] if r.srun_wait_s else [],
        slurm_setup=["export PYTHONUNBUFFERED=1", *r.setup, batch_step_line(plan, r, python)],
    )
    if r.gpus_per_node:
        params["gpus_per_node"] = r.gpus_per_node
    if r.mem_gb is not None:
        params["mem_gb"] = r.mem_gb
    for key in ("account", "qos", "constraint", "exclude"):
        if getattr(r, key):
            params[f"slurm_{key}"] = getattr(r, key)
    params.update(named)
    ex.update_parameters(**params)
    return ex


def _callable(plan: Plan, job: Job):
    from lakd.sweep import tasks

    if job.kind == "shards":
        return tasks.build_dataset_shards, (job.shards,)
    if job.kind == "collect":
        return tasks.collect_task, (plan.describe(), str(plan.sweep_dir))
    return tasks.StageTask(job.config, job.key), ()


def write_plan_files(plan: Plan) -> None:
    """``.sweep/plan.json``, ``.sweep/source.json`` (how to build the plan again, lakd.sweep.locate) and one
    resolved config per stage (``.sweep/configs/<run>.<stage>.yaml``)."""
    import yaml

    for job in plan.jobs.values():
        if job.kind == "stage":
            path = config_path(plan, job)
            text = yaml.safe_dump(job.config, sort_keys=False, default_flow_style=None)
            if not path.exists() or path.read_text() != text:
                write_text_atomic(path, text)
    if plan.source is not None:
        write_text_atomic(plan.state_dir / "source.json", json.dumps(plan.source, indent=1, default=str))
    write_text_atomic(plan.state_dir / "plan.json", json.dumps(plan.describe(), indent=1))


def config_path(plan: Plan, job: Job) -> Path:
    return plan.state_dir / "configs" / f"{job.run_name}.{job.stage}.yaml"


def job_script(plan: Plan, job: Job, python: str = sys.executable) -> str:
    """The batch script submitit would submit for ``job`` (without dependency), for ``sbatch --test-only``."""
    group = Group(level(job), job.kind, job.stage, job.resources, "", jobs=[job])
    inner = make_executor(plan, group, python, make_dirs=False)._executor
    return inner._make_submission_file_text(inner._submitit_command_str, "preflight")


def check_plan(plan: Plan, records: Records, *, query: bool, probe: bool, python: str, log) -> None:
    """Every job that would be submitted can run (lakd.sweep.preflight); raises PreflightError otherwise."""
    from lakd.sweep.preflight import preflight

    states = job_states(plan, records, query_slurm=query)
    firsts: dict[str, Job] = {}
    for key, st in states.items():
        job = plan.jobs[key]
        if st.state != "done" and not st.active:
            firsts.setdefault(_resources_key(job), job)
    groups = [(f"{j.stage or j.kind} jobs", _job_resources(j), job_script(plan, j, python)) for j in firsts.values()]
    preflight(plan.sweep_dir, groups, probe=probe, python=python, log=log)


def submit_plan(plan: Plan, *, dry_run: bool = False, log: Callable[[str], None] = print,
                python: str = sys.executable, probe: bool = True, cluster: bool = True) -> SubmitReport:
    """Submit what is neither finished nor queued/running (see module docstring). Before anything is written,
    cancelled or submitted, every job to submit is checked against the cluster (lakd.sweep.preflight;
    ``probe``: also from a compute node); a problem raises PreflightError (a ValueError). ``dry_run``: the
    same checks except the probe (it would start a job step), then print the plan (jobs, arrays, dependencies,
    resources); nothing is written or submitted. A dry run without Slurm here, or with ``cluster=False`` (the plan
    of the local executor), checks only the runs directory."""
    from lakd.sweep.preflight import check_runs_dir

    query = slurm_available()
    if not dry_run and not query:
        raise RuntimeError("sbatch/squeue not found: is this a Slurm login node? (use --executor local otherwise)")
    records = Records(plan.state_dir)
    if dry_run:
        if query and cluster:
            check_plan(plan, records, query=query, probe=False, python=python, log=log)
        else:
            check_runs_dir(plan.sweep_dir)
        return _submit(plan, records, query=query, dry_run=True, log=log, python=python)
    check_plan(plan, records, query=query, probe=probe, python=python, log=log)
    with sweep_lock(plan.state_dir, "submit"):
        write_plan_files(plan)
        return _submit(plan, records, query=query, dry_run=False, log=log, python=python)


def _submit(plan: Plan, records: Records, *, query: bool, dry_run: bool, log, python: str) -> SubmitReport:
    states = job_states(plan, records, query_slurm=query)
    report = SubmitReport()
    slurm_id: dict[str, Optional[str]] = {}  # key -> id new jobs must wait for (None: finished)
    to_submit: list[Job] = []
    for key, st in states.items():
        job = plan.jobs[key]
        if st.state == "done":
            report.skipped_done.append(key)
            slurm_id[key] = None
        elif st.state == "blocked" and st.queued:  # waits for a job that ended for good: behind a new one
            report.cancelled.append((key, st.slurm_id))
            to_submit.append(job)
        elif st.active:
            report.skipped_active.append((key, st.slurm_id))
            slurm_id[key] = st.slurm_id
        else:
            to_submit.append(job)
            note = redo_note(job)
            if note:
                log(f"note: {note}")
    collect = states.get("collect")
    if (collect and collect.state == "pending" and any(j.kind != "collect" for j in to_submit)):
        # the queued collect job does not wait for the jobs submitted now: a new one behind everything
        report.skipped_active.remove(("collect", collect.slurm_id))
        report.cancelled.append(("collect", collect.slurm_id))
        to_submit.append(plan.jobs["collect"])
    if report.cancelled and not dry_run:
        subprocess.run(["scancel", *[i for _, i in report.cancelled]], check=False)
    for key, sid in report.cancelled:
        why = ("it would not wait for the jobs submitted now" if key == "collect"
               else "it waits for a job that ended without finishing")
        log(f"{'would cancel' if dry_run else 'cancelled'} {sid} ({key}): {why}; submitting it again")

    # groups in dependency order: a job is submitted after every job it waits for (with init_from a teacher waits
    # for a baseline, and a student or a finetune control for the baseline it starts from)
    depth = dependency_depths(plan.jobs)
    for d in sorted({depth[j.key] for j in to_submit}):
        groups: dict[tuple, Group] = {}
        for job in (j for j in to_submit if depth[j.key] == d):
            after = [k for k in job.deps if slurm_id.get(k)]
            if job.kind == "collect":  # every array as a whole (A, not A_0 A_1 ...): they are all ours
                waits = list(dict.fromkeys(slurm_id[k].split("_")[0] for k in after))
                dep = f"afterany:{':'.join(waits)}" if waits else ""
            else:
                waits = sorted({slurm_id[k] for k in after})
                dep = f"afterok:{':'.join(waits)}" if waits else ""
            gkey = (level(job), _resources_key(job), dep)
            if gkey not in groups:
                groups[gkey] = Group(level(job), job.kind, job.stage, job.resources, dep, after=after)
            groups[gkey].jobs.append(job)
        for group in groups.values():
            if dry_run:
                group.ids = [f"<new {j.key}>" for j in group.jobs]
            else:
                group.ids = _submit_group(plan, group, python)
                for job, sid in zip(group.jobs, group.ids):
                    records.add(job.key, sid, dependency=group.dependency)
                records.save()
            for job, sid in zip(group.jobs, group.ids):
                slurm_id[job.key] = sid
            report.groups.append(group)
    _print_report(plan, report, dry_run, log)
    return report


def _submit_group(plan: Plan, group: Group, python: str) -> list[str]:
    ex = make_executor(plan, group, python)
    calls = [_callable(plan, j) for j in group.jobs]
    if len(calls) == 1:
        fn, args = calls[0]
        return [str(ex.submit(fn, *args).job_id)]
    with ex.batch():
        jobs = [ex.submit(fn, *args) for fn, args in calls]
    return [str(j.job_id) for j in jobs]


def _print_report(plan: Plan, report: SubmitReport, dry_run: bool, log) -> None:
    verb = "would submit" if dry_run else "submitted"
    log(f"sweep {plan.spec.name}: {len(plan.jobs)} jobs in {plan.sweep_dir}")
    if report.skipped_done:
        log(f"  finished, skipped: {len(report.skipped_done)}")
    for key, sid in report.skipped_active:
        log(f"  already queued/running, not submitted again: {key} (job {sid})")
    names = {0: "shards", 1: "teachers", 2: "students + baselines", 3: "collect"}
    for g in report.groups:
        r = _job_resources(g.jobs[0])
        what = "job" if len(g.jobs) == 1 else f"array of {len(g.jobs)} (at most {r.array_parallelism} at once)"
        res = (f"partition {r.partition}, {r.nodes} node(s) x {r.tasks} task(s)"
               + (f", {r.gpus_per_node} GPU(s)/node" if r.gpus_per_node else "")
               + f", {r.cpus_per_task} CPU(s)/task, time {r.time}")
        log(f"  {verb} [{names[g.level]}] {what}: {res}")
        if g.after:
            kind = g.dependency.split(":")[0]
            shown = ", ".join(g.after[:3]) + (f" and {len(g.after) - 3} more" if len(g.after) > 3 else "")
            ids = "" if dry_run else f" = {g.dependency}"
            log(f"    {kind} {shown}{ids}")
        for job, sid in zip(g.jobs, g.ids):
            log(f"      {sid}  {job.key}  ({job.label})")
    if not report.groups:
        log("  nothing to submit" + ("" if report.skipped_active else ": the sweep is complete"))
