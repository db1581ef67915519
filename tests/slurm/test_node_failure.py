"""A node dies under a two-node sweep job (tests/slurm/test_sweep_slurm.py's tiny sweep on the real test cluster):
slurm/testcluster/node.sh kills the node's slurmd and every process of that node (its slurmstepd and rank) after
the teacher's first checkpoint, and the test marks the node DOWN, as slurmctld does once SlurmdTimeout (300 s here)
ran out. Slurm ends the job NODE_FAIL and requeues it itself; once the node is back, the next attempt resumes
from the newest checkpoint. The events and `lakd sweep status` name the node that died, never the survivor (whose
rank srun reports as failed), and count the requeue as Slurm's. The node is brought back in a finally."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from slurmtest import REPO, latest_step
from test_sweep_slurm import sweep_cmd, write_sweep

pytestmark = pytest.mark.slow
NODE_SH = REPO / "slurm/testcluster/node.sh"
ITERS = 16


def _show_job(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _foreign_jobs(node: str, ours: set[str]) -> list[str]:
    """Jobs on ``node`` that are not this test's (the node must not take anybody else's job down with it)."""
    out = subprocess.run(["squeue", "-h", "-r", "-w", node, "-o", "%i"], capture_output=True, text=True).stdout
    return [j for j in out.split() if j not in ours and j.split("_")[0] not in ours]


def _node(action: str, node: str) -> None:
    r = subprocess.run(["bash", str(NODE_SH), action, node], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"node.sh {action} {node}: {r.stdout}{r.stderr}"


def test_dead_node_requeued_by_slurm_resumes_and_is_named(slurm, two_nodes, shards_dir):
    sweep = write_sweep(slurm, shards_dir, baselines=[], pairs=[{"teacher": "dlv3_r18_la", "student": "dlv3_r18"}])
    r = slurm.run(sweep_cmd(sweep, "--partition", "gpu", "--nodes", "2", "--gpus-per-node", "1", "--executor",
                            "slurm"), env=slurm.with_step_delay(0.6))
    assert r.returncode == 0, r.stdout + r.stderr
    sweep_dir = slurm.workdir / "runs" / "tiny"
    records = json.loads((sweep_dir / ".sweep/jobs.json").read_text())["jobs"]
    ours = {e[-1]["id"] for e in records.values()}
    job = records["teacher/synthetic-dlv3_r18_la"][-1]["id"]
    stage_dir = sweep_dir / "synthetic-dlv3_r18_la" / "teacher"
    events_file = sweep_dir / ".sweep/events.jsonl"
    victim = None
    try:
        slurm.wait_for(lambda: latest_step(stage_dir) >= 4, 300, "the teacher's first checkpoint")
        info = _show_job(job)
        survivor = info["BatchHost"]
        nodes = subprocess.run(["scontrol", "show", "hostnames", info["NodeList"]], capture_output=True,
                               text=True).stdout.split()
        victim = next(n for n in nodes if n != survivor)  # not the batch host: srun there reports the survivor
        busy = _foreign_jobs(victim, ours)
        if busy:
            pytest.skip(f"other jobs run on {victim} ({', '.join(busy)}): not taking them down")
        _node("kill", victim)
        # what slurmctld does when the node missed SlurmdTimeout: NODE_FAIL, and the job (--requeue) is requeued
        subprocess.run(["scontrol", "update", f"NodeName={victim}", "State=DOWN", "Reason=lakd test: node killed"],
                       check=True)
        saved = latest_step(stage_dir)  # no checkpoint can complete without the dead rank
        slurm.wait_for(lambda: _show_job(job).get("Restarts", "0") != "0", 120, "Slurm to requeue the job")
        _node("start", victim)  # the 2-node job can run again
        victim_back = victim
        victim = None
        slurm.wait_for(lambda: (stage_dir / "result.json").exists() or None, 400, "the teacher to finish")
        slurm.wait_gone(job, 60)
    finally:
        if victim is not None:
            _node("start", victim)
        slurm.run(["scancel", *[i for i in ours if i != job]])  # the student and collect jobs are not needed here
    rows = [x.split("|") for x in slurm.run(["sacct", "-n", "-P", "-X", "-D", "-j", job, "-o",
                                             "State,NodeList"]).stdout.splitlines()]
    assert any(state == "NODE_FAIL" for state, _ in rows), rows

    log = (sweep_dir / f".sweep/logs/{job}_0_log.err").read_text()
    assert f"lakd: job {job} was restarted by Slurm (restart 1: node failure on {victim_back}, requeued by Slurm)" \
        in log, log[-3000:]
    assert re.search(rf"attempt 2 of job {job}[\s\S]*resuming at step {saved} ", log), log[-3000:]
    events = [json.loads(x) for x in events_file.read_text().splitlines()]
    mine = [e for e in events if e["job"] == job]
    assert [e["action"] for e in mine] in (["ended", "slurm_requeue"], ["slurm_requeue"]), mine  # never a retry
    assert mine[-1]["cause"] == f"node failure on {victim_back}, requeued by Slurm", mine
    # the job asked accounting (sacct from its node) how the attempt ended and where it ran
    assert mine[-1]["state"] == "NODE_FAIL" and mine[-1]["nodes"] == info["NodeList"], mine
    assert all(f"on {survivor}" not in (e.get("cause") or "") for e in mine), f"the survivor is named: {mine}"
    assert json.loads((stage_dir / "result.json").read_text())["steps"] == ITERS

    status = slurm.run(sweep_cmd(sweep, "status"))
    line = next(x for x in status.stdout.splitlines() if x.startswith("teacher/"))
    assert " done " in line and "1 requeue(s) by Slurm" in line and f"node failure on {victim_back}" in line, line
    # the cluster is as it was: every daemon recorded alive, every node in service
    up = subprocess.run(["bash", str(REPO / "slurm/testcluster/status.sh")], capture_output=True, text=True)
    assert up.returncode == 0, up.stdout
