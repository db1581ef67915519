"""Sweep files, plans, dry runs, the requeue policy and the local executor: no Slurm needed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lakd.sweep import make_plan
from lakd.sweep.requeue import decide, show_job, srun_failures
from lakd.sweep.spec import resolve_source, time_minutes
from slurmtest import REPO, STAGE_OVERRIDES, TEST_SHARDS


def tiny_raw(tmp_path, **top) -> dict:
    raw = yaml.safe_load(resolve_source("tiny").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw.update(top)
    return raw


def test_shipped_sweeps_plan_the_paper_grid():
    plan = make_plan("paper", runs_dir="/tmp/lakd-plan-test")
    jobs = plan.ordered()
    kinds = [j.kind for j in jobs]
    assert kinds.count("shards") == 5 and kinds[-1] == "collect"
    teachers = [j for j in jobs if any(r.startswith("teacher") for r in j.roles)]
    # one label-assisted + one image-only teacher per dataset, shared by all 5 students of that dataset
    assert len(teachers) == 10
    students = [j for j in jobs if j.stage == "student"]
    assert len(students) == 5 * 5 * 2
    for s in students:
        teacher_key, base_key = s.deps  # the official pipeline: the student starts from its baseline (init_from)
        teacher = plan.jobs[teacher_key]
        assert teacher.dataset == s.dataset
        assert s.config["teacher"]["export"] == str(teacher.export_path())
        assert s.config["model"]["pretrained"] == str(plan.jobs[base_key].export_path())
        assert s.config["optim"]["lr"] == 0.001
    assert len([j for j in jobs if "baseline" in j.roles]) == 25
    assert len([j for j in jobs if "finetune" in j.roles]) == 25  # the fair control per student model
    assert len(jobs) == 5 + 10 + 25 + 25 + 50 + 1
    # every stage config is resolved and validated (absolute run directory inside the sweep)
    for j in jobs:
        if j.kind == "stage":
            assert str(j.stage_dir).startswith("/tmp/lakd-plan-test/paper/")
            assert j.config["run"]["runs_dir"] == "/tmp/lakd-plan-test/paper"


def test_image_only_teacher_is_shared_with_the_baseline_cell(tmp_path):
    raw = tiny_raw(tmp_path)
    raw["baselines"] = ["dlv3_r18", "dlv3_r18w"]  # the KD teacher's model is also a baseline row
    plan = make_plan(raw)
    job = plan.jobs["baseline/synthetic-dlv3_r18w-s0"]
    assert job.roles == ["teacher_image", "baseline"]
    assert sum(1 for j in plan.jobs.values() if j.stage_dir == job.stage_dir) == 1


def test_seeds_multiply_students_not_teachers(tmp_path):
    plan = make_plan(tiny_raw(tmp_path, seeds=[0, 1, 2]))
    stages = [j for j in plan.jobs.values() if j.kind == "stage"]
    assert len([j for j in stages if j.stage == "teacher"]) == 1
    assert sorted(j.seed for j in stages if j.stage == "student" and "lad" in j.roles) == [0, 1, 2]
    assert {j.config["run"]["seed"] for j in stages if j.stage == "teacher"} == {0}


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown key"),
    ({"pairs": [{"teacher": "nope", "student": "dlv3_r18"}]}, "unknown teacher 'nope'"),
    ({"baselines": ["resnet"]}, "unknown model 'resnet'"),
    ({"pairs": [{"teacher": "dlv3_r18_la", "student": "dlv3_r18"}, {"teacher": "dlv3_r18_la", "student": "dlv3_r18"}]},
     "already has a label-assisted"),
    ({"resources": {"time": "soon"}}, "not a Slurm time limit"),
    ({"resources": {"nodes": 0}}, "nodes: must be >= 1"),
    ({"seeds": []}, "non-empty list of integers"),
    ({"name": "my-sweep"}, "no '-'"),
    ({"overrides": {"train.itres": 5}}, "unknown config key 'train.itres'"),
])
def test_bad_sweep_files_name_the_key(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        make_plan(tiny_raw(tmp_path, **change))


def test_batch_must_split_over_the_processes(tmp_path):
    raw = tiny_raw(tmp_path, overrides={"train.batch_size": 6})
    with pytest.raises(ValueError, match="does not split over 4 processes"):
        make_plan(raw, nodes=2, gpus_per_node=2)


def test_time_limits():
    assert time_minutes("90") == 90 and time_minutes("01:30:00") == 90 and time_minutes("2-00:00:00") == 2880
    assert time_minutes("10:30") == 10.5


def test_dry_run_prints_the_dag_and_submits_nothing(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    r = subprocess.run([sys.executable, str(REPO / "launchers/sweep.py"), "--sweep", str(sweep), "--partition",
                        "gpu", "--nodes", "2", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "would submit [shards]" in out and "would submit [collect]" in out
    assert "afterok teacher/synthetic-dlv3_r18_la" in out and "afterok baseline/synthetic-dlv3_r18w-s0" in out
    assert "2 node(s) x 1 task(s)" in out
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"


def test_dry_run_runs_the_checks(tmp_path):
    """A dry run checks what a real run checks (here: a runs_dir that is a file) before printing the plan."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    (tmp_path / "runs").write_text("not a folder")
    r = subprocess.run([sys.executable, str(REPO / "launchers/sweep.py"), "--sweep", str(sweep), "--partition",
                        "gpu", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().startswith(f"sweep: error: runs_dir: {tmp_path / 'runs'} is not a directory"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "would submit" not in r.stdout


def test_requeue_policy():
    kw = dict(max_requeues=2, retries=1)
    assert decide(0, restarts=0, failures=0, **kw) == "done"
    assert decide(75, restarts=0, failures=0, **kw) == "requeue"
    assert decide(75, restarts=3, failures=1, **kw) == "give_up"  # 2 preemption requeues used up
    assert decide(137, restarts=5, failures=0, **kw) == "retry"   # preemptions do not use up retries
    assert decide(137, restarts=1, failures=1, **kw) == "give_up"
    assert decide(2, restarts=0, failures=0, **kw) == "give_up"   # bad input: a retry fails the same way
    assert decide(3, restarts=0, failures=0, **kw) == "give_up"   # diverged


def test_failed_node_and_rank_come_from_srun(tmp_path):
    log = tmp_path / "job.err"
    log.write_text("\n".join([
        "srun: error: n1: task 0: Killed",  # an earlier attempt
        "lakd: attempt 2 of job 7: teacher stage, nodes n[1-2]",
        "some training output",
        "srun: error: n2: task 1: Killed",
        "srun: First task exited 10s ago",
        "srun: error: n1: task 0: Exited with exit code 1",
    ]) + "\n")
    assert srun_failures(str(log)) == ["n2 rank 1: Killed", "n1 rank 0: Exited with exit code 1"]
    assert srun_failures(str(tmp_path / "missing")) == []


def test_scontrol_fields_with_spaces(monkeypatch):
    line = ("JobId=12 JobName=lakd teacher UserId=root(0) Comment=lakd_failures=1 Restarts=1 "
            "StdErr=/x/y z.err NodeList=n[1-2]\n")

    class R:
        stdout = line

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: R())
    f = show_job("12")
    assert f["JobName"] == "lakd teacher" and f["Comment"] == "lakd_failures=1" and f["StdErr"] == "/x/y z.err"
    assert f["NodeList"] == "n[1-2]"


@pytest.mark.slow
def test_local_executor_runs_the_dag_and_is_idempotent(tmp_path):
    """`--executor local`: shards -> teachers -> students -> collect here; a second run does nothing."""
    from lakd.sweep import run_sweep

    raw = tiny_raw(tmp_path, overrides=dict(STAGE_OVERRIDES, **{"train.iters": 2, "checkpoint.every": 2,
                                                                  "data.shards_dir": str(tmp_path / "shards")}))
    raw["datasets"]["synthetic"]["shards"]["splits"] = TEST_SHARDS
    raw["pairs"] = raw["pairs"][:1]  # the LAD pair: shards, teacher, baseline, student, collect
    lines: list[str] = []
    report = run_sweep(raw, "local", log=lines.append)
    assert report.ok, lines
    # stages run side by side (one per core), so only the dependency order is fixed
    assert sorted(report.ran) == sorted(["shards/synthetic", "teacher/synthetic-dlv3_r18_la",
                                         "baseline/synthetic-dlv3_r18-s0",
                                         "student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0", "collect"])
    assert report.ran[0] == "shards/synthetic" and report.ran[-1] == "collect"
    assert report.ran.index("teacher/synthetic-dlv3_r18_la") < report.ran.index(
        "student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0")
    md = (tmp_path / "runs/tiny/results.md").read_text()
    assert "### synthetic / student deeplabv3-resnet18-w0.125" in md
    rows = [line.split(" | ")[0] for line in md.split("## Runs")[0].splitlines() if line.startswith("| ")]
    # KD and the image-only teacher were not part of this sweep
    assert not any(r.startswith(("| Student, KD", "| Teacher, image only")) for r in rows), rows
    assert "| Student, LAD (label-assisted teacher)" in rows and "| LAD − baseline" in rows
    csv = (tmp_path / "runs/tiny/results.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,student,section,row,model,input,seeds,values_pct,mean_pct")
    assert sum(line.startswith("synthetic,") for line in csv) >= 4  # baseline, LAD, teacher x 2 inputs, difference
    plan = json.loads((tmp_path / "runs/tiny/.sweep/plan.json").read_text())
    assert [j["key"] for j in plan["jobs"]][0] == "shards/synthetic"
    again = run_sweep(raw, "local", log=lines.append)
    assert again.ran == [] and len(again.skipped_done) == 5


def test_resubmission_skips_finished_and_queued_jobs_and_replaces_dead_dependencies(tmp_path, monkeypatch):
    """What a second `lakd sweep` run submits, with Slurm's answers faked: finished jobs are skipped, queued ones
    kept (new jobs wait for their ids), a job stuck behind a failed teacher is cancelled and submitted again
    behind the teacher's new job, and the queued collect job is replaced by one behind everything."""
    from lakd.sweep import slurm as S
    from lakd.sweep.state import DEAD_DEPENDENCY, JobState, SlurmJob

    plan = make_plan(tiny_raw(tmp_path))
    states = {}
    for key, job in plan.jobs.items():
        states[key] = JobState(job, "todo")
    states["shards/synthetic"].state = "done"
    states["baseline/synthetic-dlv3_r18w-s0"] = JobState(plan.jobs["baseline/synthetic-dlv3_r18w-s0"], "running",
                                                         "41", slurm=SlurmJob("41", "RUNNING"))
    states["teacher/synthetic-dlv3_r18_la"].state = "failed"
    lad = "student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0"
    states[lad] = JobState(plan.jobs[lad], "blocked", "43", slurm=SlurmJob("43", "PENDING", DEAD_DEPENDENCY))
    states["collect"] = JobState(plan.jobs["collect"], "pending", "45", slurm=SlurmJob("45", "PENDING", "Dependency"))
    kd = "student/synthetic-dlv3_r18-kd-dlv3_r18w-s0"
    states[kd] = JobState(plan.jobs[kd], "pending", "44", slurm=SlurmJob("44", "PENDING", "Dependency"))
    monkeypatch.setattr(S, "job_states", lambda *a, **k: states)
    cancelled = []
    monkeypatch.setattr(S.subprocess, "run", lambda cmd, **k: cancelled.append(cmd))
    counter = iter(range(100, 200))
    monkeypatch.setattr(S, "_submit_group", lambda plan, group, python: [str(next(counter)) for _ in group.jobs])
    records = S.Records(plan.state_dir)
    report = S._submit(plan, records, query=True, dry_run=False, log=lambda *_: None, python=sys.executable)

    assert report.skipped_done == ["shards/synthetic"]
    assert sorted(report.skipped_active) == [("baseline/synthetic-dlv3_r18w-s0", "41"), (kd, "44")]
    assert cancelled == [["scancel", "43", "45"]] and report.cancelled == [(lad, "43"), ("collect", "45")]
    submitted = dict(report.submitted)
    assert set(submitted) == {"teacher/synthetic-dlv3_r18_la", "baseline/synthetic-dlv3_r18-s0", lad, "collect"}
    deps = {j.key: g.dependency for g in report.groups for j in g.jobs}
    assert deps["teacher/synthetic-dlv3_r18_la"] == ""  # its shards are finished
    assert deps[lad] == f"afterok:{submitted['teacher/synthetic-dlv3_r18_la']}"
    assert deps["collect"].startswith("afterany:") and {"41", "44"} <= set(deps["collect"][9:].split(":"))
    saved = json.loads((plan.state_dir / "jobs.json").read_text())["jobs"]
    assert saved[lad][-1]["id"] == submitted[lad]


def test_one_launcher_per_sweep(tmp_path):
    from lakd.sweep.state import sweep_lock

    with sweep_lock(tmp_path, "first"):
        with pytest.raises(RuntimeError, match="another launcher is working on this sweep"):
            with sweep_lock(tmp_path, "second"):
                pass
    with sweep_lock(tmp_path, "third"):
        pass
