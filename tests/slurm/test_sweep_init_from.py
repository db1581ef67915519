"""Slurm submission of a sweep with init_from: every job waits (afterok) for every job it starts from, so a
teacher never starts before the baseline it is initialised from, nor a student or a finetune control before
theirs (Slurm's answers are faked; no cluster needed)."""
from __future__ import annotations

import sys

import yaml

from lakd.sweep import make_plan
from lakd.sweep.spec import resolve_source


def test_every_dependency_is_waited_for(tmp_path, monkeypatch):
    from lakd.sweep import slurm as S
    from lakd.sweep.state import JobState

    raw = yaml.safe_load(resolve_source("tiny").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    for t in raw["teachers"].values():
        if t.get("label_assisted"):
            t["init_from"] = "baseline"
    for p in raw["pairs"]:
        p["init_from"] = "baseline"
    plan = make_plan(raw)
    assert any("finetune" in j.roles for j in plan.jobs.values())
    monkeypatch.setattr(S, "job_states", lambda *a, **k: {key: JobState(job, "todo") for key, job in plan.jobs.items()})
    counter = iter(range(100, 1000))
    monkeypatch.setattr(S, "_submit_group", lambda plan, group, python: [str(next(counter)) for _ in group.jobs])
    report = S._submit(plan, S.Records(plan.state_dir), query=True, dry_run=False, log=lambda *_: None,
                       python=sys.executable)
    ids = dict(report.submitted)
    assert set(ids) == set(plan.jobs)
    order = [j.key for g in report.groups for j in g.jobs]
    for g in report.groups:
        waits = set(g.dependency.split(":", 1)[1].split(":")) if g.dependency else set()
        for job in g.jobs:
            for dep in job.deps:
                assert order.index(dep) < order.index(job.key), (job.key, dep)
                if job.kind != "collect":
                    assert ids[dep] in waits, f"{job.key} does not wait for {dep}"
    teacher = next(j for j in plan.jobs.values() if j.stage == "teacher")
    assert any(plan.jobs[d].stage == "baseline" for d in teacher.deps)  # init_from: baseline
