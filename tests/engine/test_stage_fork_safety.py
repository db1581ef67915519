"""After run_stage returns in a process (submitit jobs and in-process callers), a process forked later (a
DataLoader worker of the next stage or evaluation) must not inherit the finished stage's process group as
uncollected garbage: gloo's destructor, run by the child's garbage collector, waits on threads that were not
forked and hangs the worker for good (seen as a hung or segfaulted DataLoader worker)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from lakd.config import load_config
from lakd.engine.stage import run_stage

from .helpers import tiny_args
from .test_stage_inprocess import LAUNCHER_VARS

pytestmark = pytest.mark.slow


def test_a_child_forked_after_a_stage_can_collect_garbage(shards, tmp_path, monkeypatch):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    cfg = load_config("synthetic", tiny_args(shards, tmp_path / "runs", "fork", **{
        "train.iters": 2, "eval.every": 0, "checkpoint.every": 2}), stage="baseline")
    run_stage(cfg)
    pid = os.fork()
    if pid == 0:  # the child: what a DataLoader worker's garbage collector does sooner or later
        import gc

        gc.collect()
        os._exit(0)
    deadline = time.time() + 60
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung collecting the finished stage's process group")
