"""`sbatch slurm/teacher.sh` on the real test cluster: end to end, interrupted by the pre-timeout signal
(requeue + exact resume) sent to the tasks or to the batch step, on two nodes, resumed on a different node
count, and a scancel that stays a cancel.

The pre-timeout signal is sent with `scancel --signal=USR2` (what `#SBATCH --signal=USR2@300` does before the
limit; Slurm checks limits only every ~30 s) or `scancel --batch --signal=USR2` (what `--signal=B:USR2@300`
does). Steps are slowed down (tests/slurm/slowstep) so that the signal lands between two checkpoints.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from slurmtest import assert_same_weights, latest_step, metrics_steps, stage_args

pytestmark = pytest.mark.slow
ITERS = 16
DELAY = 0.4  # seconds per step while a test wants to interrupt the job


def _result(stage_dir) -> dict:
    return json.loads((stage_dir / "result.json").read_text())


def _sbatch_teacher(slurm, shards_dir, run_name, *, nodes, tasks, env=None):
    runs = slurm.workdir / "runs"
    job = slurm.sbatch(
        "slurm/teacher.sh",
        [f"-N{nodes}", f"--ntasks-per-node={tasks}", f"--gpus-per-node={tasks}", "--cpus-per-task=1", "--time=15",
         f"--output={slurm.workdir}/{run_name}-%j.out"],
        ["--config", "synthetic", *stage_args(shards_dir, runs, run_name)], env=env)
    return job, runs / run_name / "teacher", slurm.workdir / f"{run_name}-{job}.out"


def _interrupt_after_checkpoint(slurm, job, stage_dir, batch=False):
    slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, f"the first checkpoint of job {job}")
    slurm.signal(job, "USR2", batch=batch)


def test_sbatch_teacher_end_to_end(reference_teacher):
    ref = reference_teacher
    rows = ref["slurm"].sacct(ref["job"])
    assert rows and rows[0]["State"] == "COMPLETED", rows
    res = _result(ref["stage_dir"])
    assert res["stage"] == "teacher" and res["steps"] == ITERS
    assert 0 <= res["eval"]["image"]["miou"] <= 1 and 0 <= res["eval"]["label"]["miou"] <= 1
    assert ref["export"].exists() and ref["export"].with_suffix(".json").exists()
    assert "lakd: attempt 1 of job" in ref["log"]
    assert re.search(r"2 process\(es\) \(slurm", ref["log"]), "the ranks did not come from srun's environment"
    assert metrics_steps(ref["stage_dir"]) == list(range(1, ITERS + 1))


def test_interrupted_job_requeues_and_resumes_exactly(slurm, shards_dir, reference_teacher):
    """One node, 2 tasks: USR2 mid-training -> every rank checkpoints -> exit 75 -> requeue -> resume."""
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "interrupted", nodes=1, tasks=2,
                                          env=slurm.with_step_delay(DELAY))
    _interrupt_after_checkpoint(slurm, job, stage_dir)
    slurm.wait_gone(job, 600, "(interrupted teacher)")
    text = log.read_text()
    assert "lakd: attempt 2 of job" in text, text[-3000:]
    assert "checkpointed after a preemption/time-limit signal: requeue 1" in text
    m = re.search(r"preempted by SIGUSR2 at step (\d+)", text)
    assert m and 4 <= int(m.group(1)) < ITERS, text[-3000:]
    assert _result(stage_dir)["steps"] == ITERS
    assert metrics_steps(stage_dir) == list(range(1, ITERS + 1)), "steps lost or repeated across the requeue"
    assert_same_weights(stage_dir / "teacher.safetensors", reference_teacher["export"])


def test_signal_to_the_batch_step_requeues_and_resumes_exactly(slurm, two_nodes, shards_dir, reference_teacher):
    """2 nodes x 1 task, `scancel --batch --signal=USR2` (what `--signal=B:USR2@N` does): the batch step passes
    the signal on to every task (a plain batch shell would die of it), the job requeues and resumes exactly."""
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "batchsig", nodes=2, tasks=1,
                                          env=slurm.with_step_delay(DELAY))
    _interrupt_after_checkpoint(slurm, job, stage_dir, batch=True)
    slurm.wait_gone(job, 600, "(teacher signalled through its batch step)")
    text = log.read_text()
    assert "the batch step got SIGUSR2: passing it on to the job step" in text, text[-3000:]
    assert "checkpointed after a preemption/time-limit signal: requeue 1" in text, text[-3000:]
    assert "lakd: attempt 2 of job" in text
    assert _result(stage_dir)["steps"] == ITERS
    assert metrics_steps(stage_dir) == list(range(1, ITERS + 1)), "steps lost or repeated across the requeue"
    assert_same_weights(stage_dir / "teacher.safetensors", reference_teacher["export"])


def test_scancel_stays_a_cancel(slurm, shards_dir):
    """scancel sends SIGTERM to the tasks and to the batch step: the ranks checkpoint, but the job is not
    requeued (a requeue from the batch step would turn the user's cancel into a restart)."""
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "cancelled", nodes=1, tasks=1,
                                          env=slurm.with_step_delay(DELAY))
    slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, f"the first checkpoint of job {job}")
    slurm.run(["scancel", job])
    slurm.wait_gone(job, 120, "(cancelled teacher)")
    rows = slurm.sacct(job)
    assert rows and rows[0]["State"].startswith("CANCELLED"), rows
    text = log.read_text()
    # the batch step says "not requeued here" unless Slurm kills it first (KillWait): either way, no attempt 2
    assert "lakd: the batch step got SIGTERM" in text and "lakd: attempt 2 of job" not in text, text[-3000:]
    assert "requeue 1 of at most" not in text
    assert not (stage_dir / "result.json").exists()


def test_requeue_by_slurm_itself_is_recorded(slurm, shards_dir, reference_teacher):
    """`scontrol requeue` (as a node failure or PreemptMode=REQUEUE would): the batch step does not requeue on top,
    the next attempt says Slurm restarted it and writes a `slurm_requeue` event; it resumes exactly."""
    events = slurm.workdir / "events.jsonl"
    env = dict(slurm.with_step_delay(DELAY), LAKD_EVENTS=str(events))
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "byslurm", nodes=1, tasks=2, env=env)
    slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, f"the first checkpoint of job {job}")
    slurm.run(["scontrol", "requeue", job])
    slurm.wait_gone(job, 600, "(teacher requeued by Slurm)")
    text = log.read_text()
    assert f"lakd: job {job} was restarted by Slurm (restart 1" in text, text[-3000:]
    evs = [json.loads(x) for x in events.read_text().splitlines()]
    actions = [e["action"] for e in evs]
    # the killed attempt may record how it ended ("ended"); it never asks for a requeue of its own
    assert actions[-1] == "slurm_requeue" and set(actions) <= {"ended", "slurm_requeue"}, actions
    # the cause comes from accounting, asked from inside the job (on a node): slurmdbd must be reachable there
    assert evs[-1]["state"] == "REQUEUED" and evs[-1]["cause"] == "requeued by Slurm (scontrol requeue or submitit)", \
        evs[-1]
    assert _result(stage_dir)["steps"] == ITERS
    assert_same_weights(stage_dir / "teacher.safetensors", reference_teacher["export"])


def test_accounting_reachable_from_every_node(slurm, two_nodes):
    """sacct run by a job, on each node (its own network namespace), reaches slurmdbd and sees the job: the path
    lakd.sweep.requeue takes to learn which node an attempt lost."""
    out = slurm.workdir / "acct-%j.out"
    r = slurm.run(["sbatch", "--parsable", "-N2", "--ntasks-per-node=1", "--cpus-per-task=1", "-p", "cpu",
                   "--time=2", f"--output={out}", "--wrap",
                   # the controller sends a new job's record to slurmdbd a moment after it starts: ask again
                   # until the row is there (at most 20 s)
                   "srun bash -c 'for i in $(seq 40); do o=$(sacct -n -P -X -j $SLURM_JOB_ID -o JobID,State 2>&1);"
                   " [ -n \"$o\" ] && break; sleep 0.5; done; echo \"$(hostname) $o\"'"])
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    slurm.wait_gone(job, 120, "(sacct on every node)")
    lines = sorted(Path(str(out).replace("%j", job)).read_text().splitlines())
    # accounting may still hold the job as PENDING (the controller reports the start a moment later)
    assert [x.split("|")[0] for x in lines] == [f"{n} {job}" for n in two_nodes], lines


def test_preemption_requeues_and_resumes_exactly(slurm, shards_dir, reference_teacher):
    """A job of the higher-tier partition `urgent` preempts the teacher (PreemptMode=REQUEUE, GraceTime 30 s):
    the tasks get SIGTERM, every rank checkpoints and exits 75, the job is requeued (same id) and resumes."""
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "preempted", nodes=1, tasks=2,
                                          env=slurm.with_step_delay(DELAY))
    slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, f"the first checkpoint of job {job}")
    node = slurm.run(["squeue", "-h", "-j", job, "-o", "%N"]).stdout.strip()
    urgent = slurm.sbatch("tests/slurm/sleep.sh", ["-p", "urgent", "-w", node, "-n", "2", "--time=2",
                                                   f"--output={slurm.workdir}/urgent-%j.out"], ["3"])
    slurm.wait_gone(urgent, 300, "(the preempting job)")
    slurm.wait_gone(job, 600, "(preempted teacher)")
    text = log.read_text()
    assert re.search(r"preempted by SIGTERM at step \d+", text), text[-3000:]
    assert "lakd: attempt 2 of job" in text, text[-3000:]
    assert _result(stage_dir)["steps"] == ITERS
    assert metrics_steps(stage_dir) == list(range(1, ITERS + 1)), "steps lost or repeated across the preemption"
    assert_same_weights(stage_dir / "teacher.safetensors", reference_teacher["export"])


def test_two_node_teacher_requeues_and_equals_single_node(slurm, two_nodes, shards_dir, reference_teacher):
    """2 nodes x 1 task through sbatch: ranks/world/master from Slurm, each rank's checkpoint part in the shared
    run directory, interrupted + requeued, final weights == the 1-node 2-process run."""
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "twonode", nodes=2, tasks=1,
                                          env=slurm.with_step_delay(DELAY))
    _interrupt_after_checkpoint(slurm, job, stage_dir)
    ckpt = stage_dir / "checkpoints" / (stage_dir / "checkpoints" / "latest").read_text().strip()
    assert (ckpt / "lakd_rank00000.json").exists() and (ckpt / "lakd_rank00001.json").exists(), \
        f"every rank writes its part of the checkpoint: {sorted(p.name for p in ckpt.iterdir())}"
    slurm.wait_gone(job, 600, "(two-node teacher)")
    text = log.read_text()
    assert "lakd: attempt 2 of job" in text
    assert re.search(r"nodes n\[1-2\]", text), text[:2000]
    assert "2 process(es) (slurm" in text
    assert _result(stage_dir)["steps"] == ITERS
    assert_same_weights(stage_dir / "teacher.safetensors", reference_teacher["export"])


def test_resume_on_fewer_nodes(slurm, two_nodes, shards_dir):
    """A 2-node run stopped after a checkpoint (requeue disabled) finishes as a 1-node job: the engine's
    documented different-world-size path (weights + schedule, with a warning)."""
    env = dict(slurm.with_step_delay(DELAY), LAKD_MAX_REQUEUES="0")
    job, stage_dir, log = _sbatch_teacher(slurm, shards_dir, "shrink", nodes=2, tasks=1, env=env)
    _interrupt_after_checkpoint(slurm, job, stage_dir)
    slurm.wait_gone(job, 600, "(2-node part)")
    assert "not requeued" in log.read_text()
    assert not (stage_dir / "result.json").exists()
    stopped_at = latest_step(stage_dir)
    assert 4 <= stopped_at < ITERS

    job2, stage_dir2, log2 = _sbatch_teacher(slurm, shards_dir, "shrink", nodes=1, tasks=1)
    assert stage_dir2 == stage_dir
    slurm.wait_gone(job2, 600, "(1-node part)")
    text = log2.read_text()
    assert "world size 2 -> 1" in text, text[-3000:]
    res = _result(stage_dir)
    assert res["steps"] == ITERS
    steps = metrics_steps(stage_dir)
    assert steps[-1] == ITERS and steps.count(stopped_at + 1) == 1


def test_real_time_limit_signal_requeues(slurm, shards_dir):
    """The slow honest path once: Slurm itself sends `--signal=B:USR2@60` (to the batch step only) before a
    2-minute limit (it checks limits every ~30 s); the batch step passes it on to the tasks, the ranks
    checkpoint, the job is requeued and the next attempt resumes."""
    runs = slurm.workdir / "runs"
    job = slurm.sbatch("slurm/teacher.sh",
                       ["-N1", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1", "--time=2",
                        "--signal=B:USR2@60", f"--output={slurm.workdir}/limit-%j.out"],
                       ["--config", "synthetic", *stage_args(shards_dir, runs, "limit")],
                       env=slurm.with_step_delay(6.0))
    log = slurm.workdir / f"limit-{job}.out"
    try:
        slurm.wait_for(lambda: log.exists() and "lakd: attempt 2 of job" in log.read_text(), 240,
                       "the requeue after the time-limit signal")
    finally:
        slurm.run(["scancel", job])
    text = log.read_text()
    assert "the batch step got SIGUSR2: passing it on to the job step" in text, text[-3000:]
    assert re.search(r"preempted by SIGUSR2 at step \d+", text), text[-3000:]
    assert "checkpointed after a preemption/time-limit signal: requeue 1" in text


def test_hard_time_limit_without_signal_requeues(slurm, shards_dir):
    """The stage batch script without any `--signal` and a 1-minute limit: at the limit Slurm sends SIGTERM to the
    batch step and the tasks (SIGKILL KillWait later); the batch step sees Reason=TimeLimit and requeues the job at
    once, the ranks save a checkpoint on their SIGTERM, and the next attempt resumes from the newest one."""
    script = slurm.workdir / "nosignal.sh"
    r = slurm.run([sys.executable, "-m", "lakd.cli", "sweep", "script", "--out", str(script)])
    assert r.returncode == 0, r.stderr
    script.write_text("".join(ln for ln in script.read_text().splitlines(True) if "--signal" not in ln))
    runs, events = slurm.workdir / "runs", slurm.workdir / "events.jsonl"
    env = dict(slurm.with_step_delay(2.0), LAKD_EVENTS=str(events))
    job = slurm.sbatch(str(script), ["-N1", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1",
                                     "--time=1", f"--output={slurm.workdir}/hardlimit-%j.out"],
                       ["--stage", "teacher", "--config", "synthetic",
                        *stage_args(shards_dir, runs, "hardlimit", **{"train.iters": 60})], env=env)
    log, stage_dir = slurm.workdir / f"hardlimit-{job}.out", runs / "hardlimit" / "teacher"
    attempt2 = re.compile(r"lakd: attempt 2 of job[\s\S]*resuming at step (\d+)")
    try:
        m = slurm.wait_for(lambda: log.exists() and attempt2.search(log.read_text()), 300,
                           "the second attempt after the time limit")
    finally:
        slurm.run(["scancel", job])
    text = log.read_text()
    assert "DUE TO TIME LIMIT" in text, text[-3000:]
    assert f"lakd: job {job} reached its time limit: requeued at once (requeue 1 of at most" in text, text[-3000:]
    saved = re.search(r"preempted by SIGTERM at step (\d+)", text)
    resumed = int(m.group(1))
    assert resumed >= 4 and (saved is None or resumed == int(saved.group(1))), text[-3000:]
    evs = [json.loads(x) for x in events.read_text().splitlines()]
    assert evs[0]["action"] == "requeue" and evs[0]["cause"].startswith("time limit"), evs
    assert not any(e["action"] == "slurm_requeue" for e in evs), "the requeue was lakd's, not a surprise"
    assert latest_step(stage_dir) >= resumed
