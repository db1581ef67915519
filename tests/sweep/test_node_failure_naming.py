"""The node that died is named, never the survivor, in what the ended attempt records and in the restart Slurm
makes (tests/slurm/test_node_failure.py does it on the real cluster); here with Slurm's answers faked."""
from __future__ import annotations

import json
import subprocess

import pytest

from lakd.sweep import requeue

# the batch step's log when n2 died under a 2-node step whose batch host is n1 (as the test cluster prints it)
LOG = """lakd: attempt 1 of job 77: teacher stage, nodes n[1-2], batch step on n1
[rank0]: RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.99.7.12]:29380.
srun: error: Node failure on n2
slurmstepd-n1: error: *** STEP 77.0 ON n1 CANCELLED AT 2026-12-05T10:22:51 DUE TO NODE FAILURE ***
lakd: the batch step got SIGTERM: Slurm is ending the job
srun: error: n1: task 0: Terminated
"""


@pytest.fixture
def job(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    err = tmp_path / "job.err"
    err.write_text(LOG)
    monkeypatch.setattr(requeue, "show_job", lambda j: {"JobState": "PENDING", "Reason": "BeginTime",
                                                        "NodeList": "n1", "StdErr": str(err)})
    return tmp_path / "events.jsonl"


def test_the_ended_attempt_names_the_dead_node(job, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setattr(requeue, "_down_nodes", lambda nodes: [])
    assert requeue.after_step(143, max_requeues=5, retries=2, events=str(job), terminated=True) == 143
    ev = json.loads(job.read_text())
    assert ev["action"] == "ended" and ev["cause"] == "node failure on n2 (ended by Slurm)", ev
    assert "ended by Slurm (node failure on n2)" in capsys.readouterr().err


def test_the_restart_names_the_dead_node_without_accounting(job, monkeypatch, capsys):
    """sacct does not answer (the test cluster's nodes cannot reach slurmdbd): the ended attempt's event names it."""
    monkeypatch.setattr(requeue, "previous_attempt", lambda j: None)
    requeue._append_event(str(job), {"job": "77", "action": "ended", "restarts": 0,
                                     "cause": "node failure on n2 (ended by Slurm)"})
    requeue.note_restart("77", 1, str(job))
    ev = [json.loads(x) for x in job.read_text().splitlines()][-1]
    assert ev["action"] == "slurm_requeue" and ev["cause"] == "node failure on n2, requeued by Slurm", ev
    assert "restarted by Slurm (restart 1: node failure on n2, requeued by Slurm)" in capsys.readouterr().err
    requeue.note_restart("77", 1, str(job))  # the same attempt again (e.g. the batch step restarted): no new event
    assert len(job.read_text().splitlines()) == 2


def _fake_accounting(monkeypatch, sacct: str, events: str):
    def run(cmd, **kw):
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 0, sacct, "")
        if cmd[0] == "sacctmgr":
            assert "Nodes=n[1-2]" in cmd and "Start=2026-12-05T10:22:37" in cmd, cmd
            return subprocess.CompletedProcess(cmd, 0, events, "")
        raise AssertionError(cmd)

    monkeypatch.setattr(requeue.subprocess, "run", run)


def test_the_restart_names_the_dead_node_from_accounting(monkeypatch):
    _fake_accounting(monkeypatch, "77|NODE_FAIL|2026-12-05T10:22:37|2026-12-05T10:22:51|n[1-2]\n"
                                  "77|RUNNING|2026-12-05T10:23:08|Unknown|n[1-2]\n",
                     "n2|2026-12-05T10:22:51|DOWN\nn1|2026-12-05T09:00:00|DOWN\n")
    prev = requeue.previous_attempt("77")
    assert prev == {"JobID": "77", "State": "NODE_FAIL", "Start": "2026-12-05T10:22:37",
                    "End": "2026-12-05T10:22:51", "NodeList": "n[1-2]"}
    assert requeue.restart_cause(prev) == "node failure on n2, requeued by Slurm"


@pytest.mark.parametrize("state, cause", [("REQUEUED", "requeued by Slurm (scontrol requeue or submitit)"),
                                          ("PREEMPTED", "requeued by Slurm (preempted)")])
def test_other_restarts_by_slurm(state, cause):
    prev = {"JobID": "77", "State": state, "Start": "a", "End": "b", "NodeList": "n1"}
    assert requeue.restart_cause(prev) == cause and requeue.restart_cause(None) == "requeued by Slurm"


def test_the_stepd_of_the_survivor_is_not_taken_for_the_dead_node(tmp_path):
    """`*** STEP 77.0 ON n1 CANCELLED ... DUE TO NODE FAILURE` comes from n1, which is alive: a node failed, not n1."""
    log = tmp_path / "job.err"
    log.write_text("\n".join(x for x in LOG.splitlines() if "Node failure on" not in x) + "\n")
    assert requeue.srun_failures(str(log)) == ["node failure", "n1 rank 0: Terminated"]


def test_the_restart_reads_the_previous_attempt_of_the_log(job, monkeypatch, tmp_path):
    """The ended attempt's batch step was killed before it could record anything: srun's line in the previous
    attempt's part of the log names the node."""
    monkeypatch.setattr(requeue, "previous_attempt", lambda j: None)
    err = tmp_path / "job.err"
    err.write_text(LOG.split("lakd: the batch step")[0] + "lakd: attempt 2 of job 77: teacher stage\n")
    assert requeue.srun_failures(str(err)) == []  # the current attempt: nothing yet
    assert requeue.srun_failures(str(err), attempt=-2)[0] == "node failure on n2"
    requeue.note_restart("77", 1, str(job))
    assert json.loads(job.read_text())["cause"] == "node failure on n2, requeued by Slurm"


def test_a_dead_batch_host_is_named_from_the_nodes_slurm_marks_down(job, monkeypatch, tmp_path):
    """The batch host itself died (nothing in the log, no accounting): the previous attempt's nodes that Slurm
    marks down now."""
    monkeypatch.setattr(requeue, "previous_attempt", lambda j: None)
    asked = []
    monkeypatch.setattr(requeue, "_down_nodes", lambda nodes: asked.append(nodes) or ["n1"])
    err = tmp_path / "job.err"
    err.write_text("lakd: attempt 1 of job 77: teacher stage, nodes n[1-3], batch step on n1, 2026-12-05T10:22:37\n"
                   "lakd: attempt 1 of job 77: teacher in /runs/x, rank 0/3 on n1\n"   # task 0 (submitit jobs)
                   "lakd: attempt 2 of job 77: teacher stage, nodes n[2-4], batch step on n2, 2026-12-05T10:30:00\n")
    requeue.note_restart("77", 1, str(job))
    assert asked == ["n[1-3]"]
    assert json.loads(job.read_text())["cause"] == "node failure on n1, requeued by Slurm"
