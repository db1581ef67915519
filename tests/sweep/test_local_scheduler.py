"""The local executor's scheduler (lakd.sweep.local.run_local) with a fake `python` that only records when each
stage ran: stages side by side up to `parallel`, dependencies respected, failures block their dependants, the
longest chains first. The real stages run in tests/demo and tests/slurm."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from lakd.sweep import make_plan
from lakd.sweep.local import _critical_path, run_local
from lakd.sweep.spec import resolve_source

FAKE = """#!/bin/sh
# fake interpreter: `<this> -m lakd.cli train --stage S --config PATH`
cfg="$7"
echo "start $cfg $(date +%s.%N)" >> "{log}"
case "$cfg" in *{fail}*) exit 1 ;; esac
sleep {sleep}
echo "end $cfg $(date +%s.%N)" >> "{log}"
"""


def _plan(tmp_path, seeds=(0, 1)):
    raw = yaml.safe_load(resolve_source("demo").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw["seeds"] = list(seeds)
    plan = make_plan(raw, executor="local")
    for key in [k for k, j in plan.jobs.items() if j.kind in ("shards", "collect")]:
        del plan.jobs[key]  # no data, no table: only the stage DAG
    for j in plan.jobs.values():
        j.deps = [d for d in j.deps if d in plan.jobs]
    return plan


def _run(tmp_path, plan, *, parallel, fail="nothing-fails", sleep=0.3):
    log = tmp_path / "events.log"
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE.format(log=log, fail=fail, sleep=sleep))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    report = run_local(plan, parallel=parallel, retries=0, python=str(fake), log=lambda m: None, poll_s=0.02)
    events = []
    for line in log.read_text().splitlines():
        kind, cfg, t = line.split()
        events.append((float(t), kind, Path(cfg).name.split(".")[0]))
    return report, sorted(events)


def _most_at_once(events) -> int:
    running = most = 0
    for _, kind, _ in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_stages_run_side_by_side_up_to_parallel(tmp_path, parallel):
    plan = _plan(tmp_path)
    report, events = _run(tmp_path, plan, parallel=parallel)
    assert report.ok and len(report.ran) == len(plan.jobs)
    assert _most_at_once(events) == parallel
    # every stage started after all of its dependencies ended
    ended = {name: t for t, kind, name in events if kind == "end"}
    started = {name: t for t, kind, name in events if kind == "start"}
    for job in plan.jobs.values():
        me = Path(job.stage_dir).parent.name
        for d in job.deps:
            dep = Path(plan.jobs[d].stage_dir).parent.name
            assert ended[dep] <= started[me], (job.key, d)


def test_a_failed_stage_blocks_only_its_dependants(tmp_path):
    plan = _plan(tmp_path, seeds=(0,))
    report, events = _run(tmp_path, plan, parallel=2, fail="synthetic-plain_la.teacher")
    assert report.failed == ["teacher/synthetic-plain_la"]
    assert report.blocked == ["student/synthetic-plain-lad-plain_la-s0"]
    assert "student/synthetic-plain-kd-plain-s0" in report.ran and not report.ok


def test_longest_chains_start_first(tmp_path):
    plan = _plan(tmp_path, seeds=(0,))
    path = _critical_path(plan)
    # the dual-path teacher (1500 steps, two paths) outweighs baseline -> student chains (1500 + 500)
    assert path["teacher/synthetic-plain_la_dual"] == 3000
    assert path["baseline/synthetic-plain-s0"] == 2000 and path["student/synthetic-plain-kd-plain-s0"] == 500
    report, events = _run(tmp_path, plan, parallel=1, sleep=0.05)
    first = next(name for _, kind, name in events if kind == "start")
    assert first == "synthetic-plain_la_dual"


def test_stages_get_their_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    plan = _plan(tmp_path, seeds=(0,))
    fake = tmp_path / "fakepython"
    fake.write_text(f'#!/bin/sh\necho "$OMP_NUM_THREADS" >> "{tmp_path}/omp.log"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("lakd.sweep.local.default_parallel", lambda: 4)
    run_local(plan, parallel=2, retries=0, python=str(fake), log=lambda m: None, poll_s=0.02)
    assert set((tmp_path / "omp.log").read_text().split()) == {"2"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    (tmp_path / "omp.log").unlink()
    run_local(plan, parallel=2, retries=0, python=str(fake), log=lambda m: None, poll_s=0.02)
    assert set((tmp_path / "omp.log").read_text().split()) == {"3"}  # the user's setting wins
