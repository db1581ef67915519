"""The edges of the Slurm tooling without a cluster: the batch step's signal handling, the checks before
submitting, blocked jobs, the collect job's states, `--slurm` options and the `lakd sweep` command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lakd.sweep import make_plan
from lakd.sweep.spec import Resources, resolve_source

CHILD = r"""
import signal, sys, time
got = []
signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
print("ready", flush=True)
t0 = time.time()
while not got and time.time() - t0 < 20:
    time.sleep(0.05)
sys.exit(75 if got else 1)
"""


def _tiny(tmp_path, **top) -> dict:
    raw = yaml.safe_load(resolve_source("tiny").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw["overrides"] = {"data.shards_dir": str(tmp_path / "shards")}
    raw.update(top)
    return raw


# ------------------------------------------------------------------------------------------ the batch step
def _run_step(tmp_path, sig):
    """StepRunner with a child that exits 75 on USR2; ``sig`` is sent to *this* process once the child runs."""
    from lakd.sweep.batch import StepRunner

    ready = tmp_path / "ready"
    runner = StepRunner([sys.executable, "-c", CHILD.replace('print("ready", flush=True)',
                                                           f'open({str(ready)!r}, "w").close()')])
    pid = os.getpid()

    def send():
        t0 = time.time()
        while not ready.exists() and time.time() - t0 < 20:
            time.sleep(0.02)
        os.kill(pid, sig)

    threading.Thread(target=send, daemon=True).start()
    return runner, runner.run()


def test_batch_step_passes_usr2_on_to_the_job_step(tmp_path):
    """`scancel --batch --signal=USR2` / `--signal=B:USR2@N`: the batch step survives and the step gets it."""
    before = signal.getsignal(signal.SIGUSR2)
    runner, rc = _run_step(tmp_path, signal.SIGUSR2)
    assert rc == 75 and not runner.terminated
    assert signal.getsignal(signal.SIGUSR2) is before, "the handlers are restored afterwards"


def test_sigterm_to_the_batch_step_is_remembered_not_forwarded(tmp_path):
    """scancel/time limit: Slurm signals the tasks itself; the batch step notes that the job is ending."""
    runner, rc = _run_step(tmp_path, signal.SIGTERM)
    assert runner.terminated and rc == 1  # the child never got a signal from us and ran out its wait


def test_a_job_ending_by_sigterm_is_not_requeued(monkeypatch, tmp_path, capsys):
    from lakd.sweep import requeue

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setattr(requeue, "show_job", lambda job: {"NodeList": "n1"})
    calls = []
    monkeypatch.setattr(requeue.subprocess, "run", lambda cmd, **k: calls.append(cmd))
    events = tmp_path / "events.jsonl"
    assert requeue.after_step(75, max_requeues=5, retries=2, events=str(events), terminated=True) == 75
    assert calls == [] and "not requeued here" in capsys.readouterr().err
    assert json.loads(events.read_text())["action"] == "ended"


def test_batch_command_lines():
    from lakd.sweep.batch import stage_of, train_command

    cmd = train_command(["--stage", "student", "--config", "x", "--stage", "baseline"], 30, python="py")
    assert cmd[:3] == ["srun", "--kill-on-bad-exit=0", "--wait=30"] and cmd[3:7] == ["py", "-m", "lakd.cli", "train"]
    assert stage_of(cmd) == "baseline" and stage_of(["--stage=teacher"]) == "teacher"


def test_the_dead_node_is_named_not_the_survivor(tmp_path):
    from lakd.sweep.requeue import srun_failures

    log = tmp_path / "job.err"
    log.write_text("\n".join([
        "lakd: attempt 1 of job 9: teacher stage, nodes n[1-2]",
        "srun: error: Node failure on n2",
        "slurmstepd: error: *** STEP 9.0 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO NODE FAILURE, SEE SLURMCTLD",
        "srun: error: n1: task 0: Killed",
    ]) + "\n")
    failures = srun_failures(str(log))
    assert failures[0] == "node failure on n2", failures


def test_restarts_by_slurm_become_events(tmp_path, capsys):
    from lakd.sweep.requeue import note_restart

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"job": "5", "action": "requeue"}) + "\n")
    note_restart("5", 1, str(events))  # explained by our own requeue
    assert len(events.read_text().splitlines()) == 1
    note_restart("5", 3, str(events))  # two more restarts nobody in lakd asked for
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [e["action"] for e in lines] == ["requeue", "slurm_requeue", "slurm_requeue"]
    assert "restarted by Slurm" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ preflight
def test_runs_dir_must_be_a_writable_directory(tmp_path):
    from lakd.sweep.preflight import PreflightError, check_runs_dir

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PreflightError, match="is not a directory"):
        check_runs_dir(f / "sweep")
    with pytest.raises(PreflightError, match="exists and is not a directory"):
        check_runs_dir(f)
    assert check_runs_dir(tmp_path / "a" / "b" / "sweep") == tmp_path
    assert not (tmp_path / "a").exists(), "checking writes nothing"


def test_runs_dir_on_a_read_only_file_system(tmp_path):
    from lakd.sweep.preflight import PreflightError, check_runs_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
    try:
        with pytest.raises(PreflightError, match="read-only file system"):
            check_runs_dir(ro / "runs" / "tiny")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def _fake_cluster(tmp_path, probe_rc=0, probe_err="", test_only_rc=0):
    calls = []

    def run(cmd, timeout=None):
        calls.append(cmd)
        if cmd[0] == "sinfo":
            out = "n1|gpu*|8|64000|gpu:4\nn2|gpu*|8|64000|gpu:4\nn1|cpu|8|64000|(null)\nn2|cpu|8|64000|(null)\n"
        elif cmd[:3] == ["scontrol", "show", "partition"]:
            out = ("PartitionName=gpu MaxNodes=UNLIMITED MaxTime=2-00:00:00 State=UP\n"
                   "PartitionName=cpu MaxNodes=1 MaxTime=01:00:00 State=UP\n")
        elif cmd[0] == "sbatch":
            return subprocess.CompletedProcess(cmd, test_only_rc, "", "" if test_only_rc == 0 else
                                               "sbatch: error: Batch job submission failed: Invalid account")
        elif cmd[0] == "srun":
            return subprocess.CompletedProcess(cmd, probe_rc, "", probe_err)
        else:
            raise AssertionError(cmd)
        return subprocess.CompletedProcess(cmd, 0, out, "")

    return run, calls


@pytest.mark.parametrize("change, message", [
    ({"partition": "nope"}, "partition 'nope' (teacher jobs) does not exist on this cluster (partitions: cpu, gpu)"),
    ({"nodes": 3}, "nodes 3 (teacher jobs): partition gpu has only 2 node(s)"),
    ({"gpus_per_node": 8}, "gpus_per_node 8 (teacher jobs): the nodes of partition gpu have at most 4 GPU(s)"),
    ({"cpus_per_task": 4}, "tasks_per_node x cpus_per_task 4 x 4 = 16 (teacher jobs)"),
    ({"mem_gb": 100.0}, "mem_gb 100 (teacher jobs): the nodes of partition gpu have at most 64000 MB"),
    ({"time": "3-00:00:00"}, "time 3-00:00:00 (teacher jobs): partition gpu allows at most 2880 minutes"),
])
def test_requests_that_cannot_fit_are_named(tmp_path, change, message):
    from lakd.sweep.preflight import PreflightError, preflight

    run, calls = _fake_cluster(tmp_path)
    r = Resources(partition="gpu", gpus_per_node=4, cpus_per_task=2, time="24:00:00")
    import dataclasses
    with pytest.raises(PreflightError, match=re.escape(message)):
        preflight(tmp_path / "sweep", [("teacher jobs", dataclasses.replace(r, **change), "#!/bin/bash\n")],
                  run=run)
    assert not any(c[0] in ("sbatch", "srun") for c in calls), "nothing goes to Slurm once a check failed"


def test_partition_limits_and_slurms_own_verdict(tmp_path):
    from lakd.sweep.preflight import PreflightError, preflight

    run, _ = _fake_cluster(tmp_path)
    with pytest.raises(PreflightError, match="nodes 2 .*partition cpu allows at most 1 per job"):
        preflight(tmp_path, [("shards jobs", Resources(partition="cpu", nodes=2, gpus_per_node=0, cpus_per_task=1),
                              None)], run=run)
    run, _ = _fake_cluster(tmp_path, test_only_rc=1)
    with pytest.raises(PreflightError, match="Slurm refuses the job script of the teacher jobs: Batch job "
                                             "submission failed: Invalid account"):
        preflight(tmp_path, [("teacher jobs", Resources(cpus_per_task=1), "#!/bin/bash\n")], run=run)


def test_probe_finds_a_runs_dir_the_nodes_do_not_see(tmp_path):
    from lakd.sweep.preflight import PreflightError, preflight

    run, calls = _fake_cluster(tmp_path, probe_rc=3)
    with pytest.raises(PreflightError, match="is not visible .* from the compute nodes of partition gpu"):
        preflight(tmp_path, [("teacher jobs", Resources(cpus_per_task=1), None)], run=run)
    (probe,) = [c for c in calls if c[0] == "srun"]
    assert probe[-1].startswith(str(tmp_path / ".lakd-probe-"))
    assert list(tmp_path.iterdir()) == [], "the probe's file is removed"
    lines = []
    run, _ = _fake_cluster(tmp_path, probe_rc=1, probe_err="srun: error: Unable to allocate resources: "
                                                           "Immediate execution impossible")
    preflight(tmp_path, [("teacher jobs", Resources(cpus_per_task=1), None)], run=run, log=lines.append)
    assert "could not check" in lines[0]


import re  # noqa: E402 - used by the parametrized test above


# ------------------------------------------------------------------------------ blocked jobs, collect state
def _states(plan, **over):
    from lakd.sweep.state import JobState

    states = {k: JobState(j, "todo") for k, j in plan.jobs.items()}
    for key, st in over.items():
        states[key.replace("__", "/")] = st
    return states


def test_jobs_behind_a_failed_teacher_are_blocked(tmp_path, monkeypatch):
    from lakd.sweep import state as S

    raw = _tiny(tmp_path, baselines=[], pairs=[{"teacher": "dlv3_r18_la", "student": "dlv3_r18"}])
    plan = make_plan(raw)
    plan.state_dir.mkdir(parents=True)
    (plan.state_dir / "plan.json").write_text(json.dumps(plan.describe()))
    records = S.Records(plan.state_dir)
    for key, sid in (("shards/synthetic", "1"), ("teacher/synthetic-dlv3_r18_la", "2"),
                     ("student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0", "3"), ("collect", "4")):
        records.add(key, sid)
    records.save()
    for m in plan.jobs["shards/synthetic"].manifests():
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_text("{}")
    monkeypatch.setattr(S, "squeue", lambda ids=None: {
        "3": S.SlurmJob("3", "PENDING", S.DEAD_DEPENDENCY), "4": S.SlurmJob("4", "PENDING", "Dependency")})
    monkeypatch.setattr(S, "sacct", lambda ids: {"2": S.SlurmJob("2", "CANCELLED", exit_code="0:15")})
    states = S.job_states(plan, query_slurm=True)
    assert states["teacher/synthetic-dlv3_r18_la"].state == "failed"
    student = states["student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0"]
    assert student.state == "blocked" and "teacher/synthetic-dlv3_r18_la" in student.detail
    assert states["collect"].state == "blocked" and not states["collect"].active

    cancelled = []
    monkeypatch.setattr(S.subprocess, "run", lambda cmd, **k: cancelled.append(cmd))
    keys = S.cancel_blocked(plan, states, log=lambda m: None)
    assert cancelled == [["scancel", "3", "4"]] and len(keys) == 2
    # once cancelled, they stay "blocked" (not "failed") and say why
    monkeypatch.setattr(S, "squeue", lambda ids=None: {})
    monkeypatch.setattr(S, "sacct", lambda ids: {i: S.SlurmJob(i, "CANCELLED", exit_code="0:0") for i in ids})
    states = S.job_states(plan, query_slurm=True)
    assert states["collect"].state == "blocked" and "waits for" in states["collect"].detail


def test_block_dependants_from_the_batch_step(tmp_path, monkeypatch):
    from lakd.sweep import state as S

    plan = make_plan(_tiny(tmp_path))
    plan.state_dir.mkdir(parents=True)
    (plan.state_dir / "plan.json").write_text(json.dumps(plan.describe()))
    records = S.Records(plan.state_dir)
    for i, key in enumerate(plan.jobs):
        records.add(key, str(10 + i))
    records.save()
    teacher = records.latest("teacher/synthetic-dlv3_r18_la")
    student = records.latest("student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0")
    monkeypatch.setattr(S, "slurm_available", lambda: True)
    monkeypatch.setattr(S, "squeue", lambda ids=None: {i: S.SlurmJob(i, "PENDING") for i in ids})
    cancelled = []
    monkeypatch.setattr(S.subprocess, "run", lambda cmd, **k: cancelled.append(cmd))
    keys = S.block_dependants(plan.state_dir, teacher, "failed for good (status 1)", log=lambda m: None)
    assert sorted(keys) == ["collect", "student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0"]
    assert sorted(cancelled[0][1:]) == sorted([student, records.latest("collect")])
    ev = [json.loads(x) for x in (plan.state_dir / "events.jsonl").read_text().splitlines()]
    assert {e["action"] for e in ev} == {"blocked"} and "teacher/synthetic-dlv3_r18_la failed for good" in ev[0]["cause"]


def test_a_collect_that_ran_with_missing_cells_is_incomplete(tmp_path, monkeypatch):
    from lakd.sweep import state as S

    plan = make_plan(_tiny(tmp_path))
    records = S.Records(plan.state_dir)
    records.add("collect", "9")
    plan.sweep_dir.mkdir(parents=True)
    (plan.sweep_dir / "results.csv").write_text("dataset\n")
    monkeypatch.setattr(S, "squeue", lambda ids=None: {})
    monkeypatch.setattr(S, "sacct", lambda ids: {"9": S.SlurmJob("9", "COMPLETED", exit_code="0:0")})
    st = S.job_states(plan, records, query_slurm=True)["collect"]
    assert st.state == "incomplete" and st.detail.startswith("missing: teacher/synthetic-dlv3_r18_la")


# ----------------------------------------------------------------------------------------- submitit options
def test_slurm_options_reach_submitit(tmp_path):
    from lakd.sweep.cli import parse_slurm_items
    from lakd.sweep.slurm import Group, job_script, make_executor, slurm_parameters

    items = parse_slurm_items(["constraint=a100", "exclusive=true", "reservation=r1", "signal=B:USR2@300",
                               "--gres=gpu:a100:4"])
    named, extra = slurm_parameters(items)
    assert named == {"slurm_constraint": "a100", "slurm_exclusive": True, "slurm_gres": "gpu:a100:4"}
    assert extra == {"reservation": "r1", "signal": "B:USR2@300"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_slurm_items(["exclusive"])

    plan = make_plan(_tiny(tmp_path), additional=items)
    job = plan.jobs["teacher/synthetic-dlv3_r18_la"]
    script = job_script(plan, job)
    for line in ("#SBATCH --constraint=a100", "#SBATCH --exclusive", "#SBATCH --reservation=r1",
                 "#SBATCH --signal=B:USR2@300", "#SBATCH --gres=gpu:a100:4", "#SBATCH --requeue"):
        assert line in script, script
    # submitit's srun line becomes the lakd batch step
    assert "srun() { exec" in script and "-m lakd.sweep.batch" in script and "--events" in script
    assert not plan.state_dir.exists(), "building the script writes nothing"
    # every log goes to one folder made before submitting (Slurm does not create --output's folder)
    assert f"#SBATCH --error={plan.state_dir / 'logs'}/%j_0_log.err" in script
    ex = make_executor(plan, Group(1, "stage", "teacher", job.resources, "afterok:5", jobs=[job]))
    assert ex._executor.parameters["additional_parameters"]["dependency"] == "afterok:5"


def test_batch_step_line_runs_in_bash(tmp_path):
    """The function that replaces submitit's srun really execs the batch step with srun's arguments."""
    from lakd.sweep.slurm import batch_step_line

    plan = make_plan(_tiny(tmp_path))
    line = batch_step_line(plan, plan.jobs["collect"].resources, python="echo")
    r = subprocess.run(["bash", "-c", f"{line}\nsrun --unbuffered 'a b' c\necho not-reached"], capture_output=True,
                       text=True)
    assert r.stdout.split(" -- ")[1].strip() == "srun --unbuffered a b c" and "not-reached" not in r.stdout


# ---------------------------------------------------------------------------------------------- lakd sweep
def test_lakd_sweep_is_a_command_of_the_package(tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "lakd.cli", "sweep", "script"], capture_output=True, text=True,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    text = path.read_text()
    assert path.name == "stage.sh" and "#SBATCH --requeue" in text and "-m lakd.sweep.batch train" in text
    r = subprocess.run([sys.executable, "-m", "lakd.cli", "sweep", "script", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "stage.sh").read_text() == text
    assert os.access(tmp_path / "stage.sh", os.X_OK)
    # the repository's wrappers carry the documented defaults and run the same batch step
    repo = Path(__file__).resolve().parents[2]
    for stage in ("teacher", "student"):
        wrapper = (repo / f"slurm/{stage}.sh").read_text()
        assert "exec \"${LAKD_PYTHON:-python3}\" -m lakd.sweep.batch train --stage" in wrapper


def test_status_says_when_there_is_no_sweep(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump(_tiny(tmp_path)))
    r = subprocess.run([sys.executable, "-m", "lakd.cli", "sweep", "status", "--sweep", str(sweep)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith(f"sweep: error: no sweep 'tiny' at {tmp_path}/runs/tiny")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_redone_cell_at_its_last_checkpoint_says_how_to_retrain(tmp_path, monkeypatch):
    """result.json deleted, checkpoint at the last step: the re-run would only evaluate; the launcher says so."""
    from lakd.sweep import slurm as S
    from lakd.sweep.state import JobState

    plan = make_plan(_tiny(tmp_path))
    job = plan.jobs["teacher/synthetic-dlv3_r18_la"]
    iters = job.config["train"]["iters"]
    (job.stage_dir / "checkpoints").mkdir(parents=True)
    (job.stage_dir / "checkpoints" / "latest").write_text(f"step_{iters:08d}")
    states = {k: JobState(j, "done" if k != job.key else "partial") for k, j in plan.jobs.items()}
    monkeypatch.setattr(S, "job_states", lambda *a, **k: states)
    lines: list[str] = []
    S._submit(plan, S.Records(plan.state_dir), query=False, dry_run=True, log=lines.append, python=sys.executable)
    assert f"note: {job.key}: its checkpoint is at the last step ({iters}/{iters}), so it is evaluated again, not " \
           f"retrained; to retrain it, delete {job.stage_dir} first" in lines
    (job.stage_dir / "checkpoints" / "latest").write_text(f"step_{iters - 1:08d}")
    lines.clear()
    S._submit(plan, S.Records(plan.state_dir), query=False, dry_run=True, log=lines.append, python=sys.executable)
    assert not any(x.startswith("note:") for x in lines)


def test_a_node_that_runs_no_step_is_named(monkeypatch):
    """A node that died before Slurm noticed: srun names only the survivor; a test step finds the dead one."""
    from lakd.sweep import requeue

    def run(cmd, **kw):
        if cmd[:3] == ["scontrol", "show", "hostnames"]:
            return subprocess.CompletedProcess(cmd, 0, "n1\nn2\n", "")
        if cmd[0] == "sinfo":
            return subprocess.CompletedProcess(cmd, 0, "n1|allocated\nn2|allocated\n", "")
        if cmd[0] == "srun":
            node = next(a.split("=")[1] for a in cmd if a.startswith("--nodelist="))
            assert node == "n2", "the batch host is not probed"
            raise subprocess.TimeoutExpired(cmd, 20)
        raise AssertionError(cmd)

    monkeypatch.setattr(requeue.subprocess, "run", run)
    monkeypatch.setattr(requeue, "srun_failures", lambda path: ["n1 rank 0: Exited with exit code 1"])
    causes = requeue._failure_causes({"NodeList": "n[1-2]", "BatchHost": "n1", "StdErr": "x"}, 1)
    assert causes == ["node failure on n2 (it runs no step)", "n1 rank 0: Exited with exit code 1"]


def test_status_shows_requeues_by_slurm(tmp_path, monkeypatch):
    from lakd.sweep import state as S

    plan = make_plan(_tiny(tmp_path))
    records = S.Records(plan.state_dir)
    records.add("teacher/synthetic-dlv3_r18_la", "21")
    S.append_event(plan.state_dir / "events.jsonl", {"job": "21", "action": "slurm_requeue",
                                                     "cause": "requeued by Slurm"})
    S.append_event(plan.state_dir / "events.jsonl", {"job": "21", "action": "requeue"})
    monkeypatch.setattr(S, "squeue", lambda ids=None: {"21": S.SlurmJob("21", "RUNNING", nodes="n1")})
    monkeypatch.setattr(S, "sacct", lambda ids: {})
    st = S.job_states(plan, records, query_slurm=True)["teacher/synthetic-dlv3_r18_la"]
    assert st.state == "running" and "1 requeue(s)" in st.detail and "1 requeue(s) by Slurm" in st.detail


def test_status_shows_a_job_pending_again_after_slurms_requeue(tmp_path, monkeypatch):
    """Between Slurm's requeue (node failure, preemption, scontrol requeue) and the next attempt, the job is
    PENDING again with a restart count: status says requeued and why (accounting: its previous attempt), before
    the next attempt can write its event."""
    from lakd.sweep import requeue
    from lakd.sweep import state as S

    plan = make_plan(_tiny(tmp_path))
    records = S.Records(plan.state_dir)
    records.add("teacher/synthetic-dlv3_r18_la", "31")
    records.add("baseline/synthetic-dlv3_r18-s0", "32")
    S.append_event(plan.state_dir / "events.jsonl", {"job": "32", "action": "requeue", "cause": "time limit"})
    fields = "JobArrayID:|,State:|,Reason:|,NodeList:|,RestartCnt:|,Comment:|"
    lines = {"31": "31|PENDING|BeginTime||1|(null)|", "32": "32|PENDING|Priority||1|a|b|", "33_1": "33_1|PENDING|None||0||"}

    def fake_run(cmd):
        assert cmd[0] == "squeue" and cmd[-1] == fields, cmd
        return "\n".join(lines.values())

    monkeypatch.setattr(S, "_run", fake_run)
    monkeypatch.setattr(requeue, "previous_attempt", lambda job: {
        "JobID": job, "State": "NODE_FAIL", "Start": "2026-01-01T00:00:00", "End": "2026-01-01T00:01:00",
        "NodeList": "n[1-2]"})
    monkeypatch.setattr(requeue, "_nodes_down_during", lambda nodes, start, end: ["n2"])
    monkeypatch.setattr(S, "sacct", lambda ids: {})
    queued = S.squeue({"31", "32", "33_1"})
    assert queued["31"].restarts == 1 and queued["33_1"].restarts == 0 and queued["32"].comment == "a|b"
    states = S.job_states(plan, records, query_slurm=True)
    teacher = states["teacher/synthetic-dlv3_r18_la"]
    assert teacher.state == "requeued" and teacher.active, teacher
    assert teacher.detail == ("restart 1: node failure on n2, requeued by Slurm; waiting to run again (BeginTime)"), \
        teacher.detail
    baseline = states["baseline/synthetic-dlv3_r18-s0"]  # requeued by its own batch step: the event says so
    assert baseline.state == "requeued" and baseline.detail.startswith("requeued (restart 1); waiting to run again "
                                                                       "(Priority)"), baseline.detail
    lines_out = []
    from lakd.sweep.cli import print_status

    counts = print_status(states, out=lines_out.append)
    assert counts["requeued"] == 2 and "2 requeued" in lines_out[-1], lines_out[-1]
