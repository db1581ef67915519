"""`python launchers/sweep.py --partition gpu` on the real two-node test cluster: the tiny synthetic sweep end to
end (shards -> teachers -> students -> collect) with every stage on 2 nodes, its order in Slurm's accounting,
a re-run that submits nothing, and a rank killed mid-job (the job ends in bounded time, the failure is reported
with node and rank, the sweep retries it and the retry resumes from the last checkpoint) followed by the
pre-timeout signal to the tasks and then to the batch step (every rank checkpoints, the job requeues and
resumes)."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from datetime import datetime

import pytest
import yaml

from lakd.sweep.spec import resolve_source
from slurmtest import REPO, SAMPLES_PER_SHARD, STAGE_OVERRIDES, TEST_SHARDS, assert_same_weights, latest_step, metrics_steps

pytestmark = pytest.mark.slow


def write_sweep(slurm, shards_dir, **changes) -> str:
    raw = yaml.safe_load(resolve_source("tiny").read_text())
    raw["runs_dir"] = str(slurm.workdir / "runs")
    raw["overrides"] = dict(STAGE_OVERRIDES, **{"data.shards_dir": str(slurm.workdir / "shards")})
    # built by the sweep's shard job exactly as the session's `shards_dir` (same data, same shard layout)
    raw["datasets"]["synthetic"]["shards"].update(splits=TEST_SHARDS, samples_per_shard=SAMPLES_PER_SHARD)
    raw["resources"].update(srun_wait_s=10, signal_delay_s=60, time="00:20:00")
    raw.update(changes)
    path = slurm.workdir / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def sweep_cmd(sweep: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "launchers/sweep.py"), *args, "--sweep", sweep]


def _time(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_sweep_end_to_end_on_two_nodes(slurm, two_nodes, shards_dir, reference_teacher):
    sweep = write_sweep(slurm, shards_dir)
    r = slurm.run(sweep_cmd(sweep, "--partition", "gpu", "--nodes", "2", "--gpus-per-node", "1", "--executor",
                            "slurm", "--wait", "--wait-timeout", "900"), timeout=1000)
    assert r.returncode == 0, r.stdout + r.stderr + slurm.tail_logs()
    sweep_dir = slurm.workdir / "runs" / "tiny"
    assert "submitted [shards] job" in r.stdout and "submitted [collect] job" in r.stdout

    # the results table, in the paper's form
    md = (sweep_dir / "results.md").read_text()
    for title in ("Student, baseline", "Student, KD (image-only teacher)", "Student, LAD (label-assisted teacher)"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {title} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"\d+\.\d", cells[2]), row  # the seed's mIoU (%)
    teacher = next(line for line in md.splitlines() if line.startswith("| Teacher, label-assisted"))
    assert all(re.fullmatch(r"\d+\.\d", c.strip()) for c in teacher.strip("|").split("|")[2:4]), teacher
    csv = (sweep_dir / "results.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,student,section,row") and csv[1].startswith("synthetic,")

    # the dependency order, as Slurm recorded it
    records = json.loads((sweep_dir / ".sweep/jobs.json").read_text())["jobs"]
    plan = json.loads((sweep_dir / ".sweep/plan.json").read_text())
    ids = {key: entries[-1]["id"] for key, entries in records.items()}
    rows = {row["JobID"]: row for row in slurm.sacct(",".join(ids.values()))}
    assert all(rows[i]["State"] == "COMPLETED" for i in ids.values()), rows
    for job in plan["jobs"]:
        for dep in job["deps"]:
            assert _time(rows[ids[job["key"]]]["Start"]) >= _time(rows[ids[dep]]["End"]), (job["key"], dep)
        if job["kind"] == "stage":
            assert rows[ids[job["key"]]]["NodeList"] == "n[1-2]", (job["key"], rows[ids[job["key"]]])

    # the label-assisted teacher trained by submitit on 2 nodes x 1 task == sbatch on 1 node x 2 tasks
    assert_same_weights(sweep_dir / "synthetic-dlv3_r18_la/teacher/teacher.safetensors", reference_teacher["export"])

    # running the finished sweep again submits nothing
    again = slurm.run(sweep_cmd(sweep, "--partition", "gpu", "--nodes", "2", "--gpus-per-node", "1",
                                "--executor", "slurm"))
    assert again.returncode == 0, again.stderr
    assert "nothing to submit: the sweep is complete" in again.stdout and "submitted" not in again.stdout
    assert json.loads((sweep_dir / ".sweep/jobs.json").read_text())["jobs"] == records
    status = slurm.run(sweep_cmd(sweep, "status"))
    assert status.returncode == 0 and "total: 7 done" in status.stdout, status.stdout


def test_killed_rank_is_retried_and_preemption_requeues(slurm, two_nodes, shards_dir, reference_teacher):
    sweep = write_sweep(slurm, shards_dir, baselines=[],
                        pairs=[{"teacher": "dlv3_r18_la", "student": "dlv3_r18"}])
    env = slurm.with_step_delay(0.6)
    r = slurm.run(sweep_cmd(sweep, "--partition", "gpu", "--nodes", "2", "--gpus-per-node", "1", "--retries", "1",
                            "--executor", "slurm"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    sweep_dir = slurm.workdir / "runs" / "tiny"
    records = json.loads((sweep_dir / ".sweep/jobs.json").read_text())["jobs"]
    job = records["teacher/synthetic-dlv3_r18_la"][-1]["id"]
    stage_dir = sweep_dir / "synthetic-dlv3_r18_la" / "teacher"
    events_file = sweep_dir / ".sweep/events.jsonl"
    try:
        slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, "the teacher's first checkpoint")
        pids = slurm.wait_for(lambda: slurm.job_processes(job, rank=1), 30, "rank 1's process")
        killed_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)  # the "node" of rank 1 dies

        def retried():
            if not events_file.exists():
                return None
            return [e for e in map(json.loads, events_file.read_text().splitlines()) if e["action"] == "retry"]

        events = slurm.wait_for(retried, 120, "the sweep to retry the teacher")
        ended_after = time.monotonic() - killed_at
        # srun --wait 10 s, then the decision; bounded, with room for a loaded 2-core test machine
        assert ended_after < 90, f"the job took {ended_after:.0f} s to end after a rank died"
        (ev,) = events
        assert ev["job"] == job and re.fullmatch(r"n[12] rank 1: Killed", ev["cause"]), ev

        status = slurm.run(sweep_cmd(sweep, "status"))
        assert "1 retry(ies)" in status.stdout and "rank 1: Killed" in status.stdout, status.stdout

        # the retry runs; now the pre-timeout signal: every rank checkpoints, exits 75, the job is requeued
        slurm.wait_for(lambda: latest_step(stage_dir) >= 8, 300, "a checkpoint of the retried teacher")
        slurm.signal(job, "USR2")
        def requeues():
            return [e for e in map(json.loads, events_file.read_text().splitlines()) if e["action"] == "requeue"]

        slurm.wait_for(requeues, 120, "the requeue after USR2")
        # and the same signal sent to the batch step only (scancel --batch, #SBATCH --signal=B:USR2@N)
        slurm.wait_for(lambda: latest_step(stage_dir) >= 12, 300, "a checkpoint of the requeued teacher")
        slurm.signal(job, "USR2", batch=True)
        slurm.wait_for(lambda: len(requeues()) >= 2, 120, "the requeue after USR2 to the batch step")
        slurm.wait_for(lambda: (stage_dir / "result.json").exists() or None, 400, "the teacher to finish")
        slurm.wait_gone(job, 60)
    finally:
        others = [e[-1]["id"] for k, e in records.items() if k != "teacher/synthetic-dlv3_r18_la"]
        slurm.run(["scancel", *others])  # the student and collect jobs are not needed here
    log = (sweep_dir / f".sweep/logs/{job}_0_log.err").read_text()
    assert "retry 1 of 1" in log and "lakd: attempt 4 of job" in log
    assert "checkpointed after a preemption/time-limit signal: requeue 1 of at most" in log
    assert "the batch step got SIGUSR2: passing it on to the job step" in log
    assert "checkpointed after a preemption/time-limit signal: requeue 2 of at most" in log
    resumed = re.findall(r"resum\w* .*?step (\d+)", log)
    assert resumed and int(resumed[-1]) >= 4, log[-3000:]
    steps = metrics_steps(stage_dir)
    assert steps[-1] == 16 and sorted(set(steps)) == list(range(1, 17))
    # resumed on the same world size from a complete checkpoint: exactly the uninterrupted run
    assert_same_weights(stage_dir / "teacher.safetensors", reference_teacher["export"])


def _our_jobs_since(t0: str) -> list[str]:
    import subprocess

    # -S selects every job alive in the window (an earlier test's job still ending too): keep those submitted since
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", t0, "-o", "JobID,JobName,Submit"], capture_output=True,
                         text=True).stdout
    return [line.rsplit("|", 1)[0] for line in out.splitlines()
            if "|lakd-" in line and line.rsplit("|", 1)[-1] >= t0]


def test_nothing_is_submitted_unless_everything_can_run(slurm, two_nodes, shards_dir):
    """Each request the cluster cannot satisfy: one line naming it, exit 2, nothing submitted or written (the
    shard job of a valid --cpu-partition included), with and without --dry-run."""
    sweep = write_sweep(slurm, shards_dir)
    not_a_dir = slurm.workdir / "a-file"
    not_a_dir.write_text("x")
    t0 = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    cases = [
        (["--partition", "nope", "--cpu-partition", "cpu"], "partition 'nope' (teacher jobs) does not exist"),
        (["--partition", "gpu", "--nodes", "4"], "nodes 4 (teacher jobs): partition gpu has only 2 node(s)"),
        (["--partition", "gpu", "--gpus-per-node", "3", "--tasks-per-node", "1"],
         "gpus_per_node 3 (teacher jobs): the nodes of partition gpu have at most 2 GPU(s)"),
        (["--partition", "gpu", "--slurm", "constraint=nosuchfeature"], "Slurm refuses the job script of the"),
        (["--partition", "gpu", "--runs-dir", str(not_a_dir)], f"runs_dir: {not_a_dir} is not a directory"),
    ]
    for args, message in cases:
        for dry in ([], ["--dry-run"]):  # a dry run checks the same, and says so the same way
            r = slurm.run(sweep_cmd(sweep, "--executor", "slurm", *args, *dry), timeout=120)
            assert r.returncode == 2, (args, dry, r.stdout, r.stderr)
            assert r.stderr.strip().splitlines() == [f"sweep: error: {r.stderr.strip()[len('sweep: error: '):]}"]
            assert message in r.stderr, (args, dry, r.stderr)
            assert not (slurm.workdir / "runs").exists(), f"{args}: something was written"
    time.sleep(2)
    assert _our_jobs_since(t0) == [], "a job was submitted"


def test_cancelled_teacher_blocks_its_jobs_and_one_rerun_heals(slurm, two_nodes, shards_dir):
    """scancel of the teacher: --wait cancels the student and the collect job (blocked, status says why) and
    exits 1 with a summary; one re-run submits teacher, student and a new collect, and the table is complete."""
    import subprocess

    sweep = write_sweep(slurm, shards_dir, baselines=[], pairs=[{"teacher": "dlv3_r18_la", "student": "dlv3_r18"}])
    args = ["--partition", "gpu", "--executor", "slurm", "--wait", "--wait-timeout", "600"]
    first = subprocess.Popen(sweep_cmd(sweep, *args), cwd=slurm.workdir, env=slurm.with_step_delay(0.6),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweep_dir = slurm.workdir / "runs" / "tiny"
    stage_dir = sweep_dir / "synthetic-dlv3_r18_la" / "teacher"
    try:
        slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, "the teacher's first checkpoint")
        records = json.loads((sweep_dir / ".sweep/jobs.json").read_text())["jobs"]
        teacher = records["teacher/synthetic-dlv3_r18_la"][-1]["id"]
        slurm.run(["scancel", teacher])
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, out + err
    assert "cancelled 2 blocked job(s)" in out and "the sweep did not finish" in out, out
    assert re.search(r"blocked: .*student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0", out) and "collect" in out, out
    for key in ("student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0", "collect"):
        assert not slurm.queued(records[key][-1]["id"]), f"{key} is still queued"
    status = slurm.run(sweep_cmd(sweep, "status"))
    line = next(x for x in status.stdout.splitlines() if x.startswith("student/"))
    assert " blocked " in line and "teacher/synthetic-dlv3_r18_la" in line, status.stdout

    again = slurm.run(sweep_cmd(sweep, *args), timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr + slurm.tail_logs()
    jobs = json.loads((sweep_dir / ".sweep/jobs.json").read_text())["jobs"]
    for key in ("teacher/synthetic-dlv3_r18_la", "student/synthetic-dlv3_r18-lad-dlv3_r18_la-s0", "collect"):
        assert len(jobs[key]) == 2, (key, jobs[key])
    md = (sweep_dir / "results.md").read_text()
    row = next(x for x in md.splitlines() if x.startswith("| Student, LAD (label-assisted teacher) |"))
    assert "Not finished" not in md and re.search(r"\d+\.\d", row.split("|")[3]), md  # LAD, seed 0


def test_a_job_that_dies_at_start_has_its_log(slurm, shards_dir):
    """The batch step cannot even start (a python that is not there): the job fails at once, and its log,
    in the folder made before submitting, says why."""
    from lakd.sweep import make_plan
    from lakd.sweep.slurm import submit_plan

    sweep = write_sweep(slurm, shards_dir, baselines=[], pairs=[{"teacher": "dlv3_r18_la", "student": "dlv3_r18"}])
    plan = make_plan(sweep, partition="gpu")
    report = submit_plan(plan, python="/nonexistent/python3", probe=False, log=lambda m: None)
    ids = dict(report.submitted)
    try:
        slurm.wait_gone(ids["shards/synthetic"], 120, "(shard job with a missing python)")
        err = plan.state_dir / "logs" / f"{ids['shards/synthetic']}_0_log.err"
        assert err.exists() and "/nonexistent/python3" in err.read_text(), sorted(p.name for p in err.parent.iterdir())
    finally:
        slurm.run(["scancel", *ids.values()])


def test_status_shows_a_job_requeued_by_slurm_while_it_waits(slurm, shards_dir):
    """A sweep job requeued by Slurm (`scontrol requeue`, as a node failure or preemption would) and held pending:
    `lakd sweep status` shows it requeued, with the restart and its cause from accounting, before any next
    attempt ran (the job here only sleeps: it never writes an event itself)."""
    from lakd.sweep import make_plan
    from lakd.sweep.slurm import write_plan_files
    from lakd.sweep.state import Records

    sweep = write_sweep(slurm, shards_dir)
    plan = make_plan(sweep)
    write_plan_files(plan)
    job = slurm.sbatch("tests/slurm/sleep.sh", ["-p", "cpu", "--requeue", "-n", "1", "--time=2",
                                                f"--output={slurm.workdir}/sleep-%j.out"], ["120"])
    records = Records(plan.state_dir)
    records.add("teacher/synthetic-dlv3_r18_la", job)
    records.save()
    try:
        slurm.wait_for(lambda: slurm.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip() == "RUNNING", 60,
                       "the job to run")
        slurm.run(["scontrol", "requeue", job])
        slurm.wait_for(lambda: slurm.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip() == "PENDING", 60,
                       "the requeued job to be pending")
        slurm.run(["scontrol", "hold", job])  # keeps it pending while status looks
        status = slurm.run(sweep_cmd(sweep, "status"))
    finally:
        slurm.run(["scancel", job])
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("teacher/synthetic-dlv3_r18_la "))
    assert re.search(rf" requeued +{job} +restart 1: requeued by Slurm \(scontrol requeue or submitit\); waiting to "
                     r"run again \(", line), line
    assert "1 requeued" in status.stdout.splitlines()[-1], status.stdout
