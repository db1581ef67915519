"""A hard time limit without --signal (Slurm sends SIGTERM to every step, SIGKILL KillWait later): the batch
step asks Slurm why at once and requeues the job when it is the time limit; a scancel stays a cancel.
(tests/slurm/test_sbatch.py::test_hard_time_limit_without_signal_requeues does it on the real cluster.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from lakd import exit_codes
from lakd.sweep import requeue

CHILD = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(75))   # the tasks save a checkpoint on SIGTERM
open(sys.argv[1], "w").close()
time.sleep(20)
sys.exit(1)
"""


def test_sigterm_to_the_batch_step_calls_back_while_the_step_still_runs(tmp_path):
    from lakd.sweep.batch import StepRunner

    ready = tmp_path / "ready"
    seen = []
    runner = StepRunner([sys.executable, "-c", CHILD, str(ready)],
                        on_terminate=lambda: seen.append(runner.child.poll()))
    pid = os.getpid()

    def term():
        t0 = time.time()
        while not ready.exists() and time.time() - t0 < 20:
            time.sleep(0.02)
        os.kill(pid, 15)
        time.sleep(1)
        runner.child.terminate()  # what Slurm does to the tasks

    threading.Thread(target=term, daemon=True).start()
    assert runner.run() == exit_codes.REQUEUE
    assert runner.terminated and seen == [None], "called once, before the step ended"


@pytest.fixture
def job(monkeypatch, tmp_path):
    """A fake job 77: ``show`` is what scontrol shows, ``calls`` the scontrol commands run."""
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    state = {"show": {}, "calls": [], "events": tmp_path / "events.jsonl"}
    monkeypatch.setattr(requeue, "show_job", lambda j: state["show"])

    def run(cmd, **kw):
        state["calls"].append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(requeue.subprocess, "run", run)
    return state


def test_time_limit_requeues_at_once(job, capsys):
    job["show"] = {"JobState": "COMPLETING", "Reason": "TimeLimit", "Requeue": "1", "NodeList": "n1"}
    assert requeue.requeue_at_time_limit(max_requeues=3, events=str(job["events"])) is True
    assert job["calls"] == [["scontrol", "requeue", "77"]]
    ev = json.loads(job["events"].read_text())
    assert ev["action"] == "requeue" and ev["cause"].startswith("time limit")
    assert "reached its time limit: requeued at once (requeue 2 of at most 3)" in capsys.readouterr().err
    # afterwards the step's status (75: the ranks saved) does not lead to a second requeue
    assert requeue.after_step(exit_codes.REQUEUE, max_requeues=3, retries=2, events=str(job["events"]),
                              terminated=True, requeued=True) == exit_codes.OK
    assert len(job["calls"]) == 1 and len(job["events"].read_text().splitlines()) == 1


@pytest.mark.parametrize("show", [{"JobState": "CANCELLED", "Reason": "None"},  # scancel
                                  {"JobState": "COMPLETING", "Reason": "None"}])  # end of a preemption grace time
def test_other_sigterms_are_not_requeued(job, show):
    job["show"] = show
    assert requeue.requeue_at_time_limit(max_requeues=3, events=str(job["events"])) is False
    assert job["calls"] == [] and not job["events"].exists()


@pytest.mark.parametrize("show, why", [
    ({"JobState": "TIMEOUT", "Reason": "TimeLimit", "Requeue": "0"}, "--no-requeue"),
    ({"JobState": "TIMEOUT", "Reason": "TimeLimit", "Requeue": "1"}, "requeued 1 times already")])
def test_time_limit_without_requeues_left(job, show, why, capsys):
    job["show"] = show
    assert requeue.requeue_at_time_limit(max_requeues=1, events=str(job["events"])) is False
    assert not any(c[:2] == ["scontrol", "requeue"] for c in job["calls"])
    assert why in capsys.readouterr().err
    assert json.loads(job["events"].read_text())["action"] == "give_up"
