"""Signals to the whole process group (Slurm's scancel/preemption, Ctrl-C in a terminal) with DataLoader
workers: the workers ignore them, the main process saves at the next step boundary and exits 75 (SIGTERM)
or 130 (SIGINT, with one line saying how to resume); a re-run resumes from that checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from .helpers import LAUNCH_TIMEOUT, base_env, tiny_args

pytestmark = pytest.mark.slow


def _start(args):
    p = subprocess.Popen([sys.executable, "-m", "lakd.cli", "train", *args], env=base_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    return p, lines, reader


@pytest.mark.parametrize("sig, code, says", [
    (signal.SIGTERM, 75, "preempted by SIGTERM"),
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
])
def test_group_signal_with_workers_saves_and_resumes(shards, tmp_path, sig, code, says):
    args = ["--stage", "baseline", "--config", "synthetic",
            *tiny_args(shards, tmp_path / "runs", "sig", **{"train.iters": 400, "data.num_workers": 2,
                                                           "eval.every": 0, "checkpoint.every": 1000})]
    p, lines, reader = _start(args)
    deadline = time.time() + LAUNCH_TIMEOUT
    while not any("step 2/400" in x for x in list(lines)):
        assert p.poll() is None and time.time() < deadline, "".join(lines)
        time.sleep(0.2)
    os.killpg(p.pid, sig)  # the main process and its DataLoader workers, as Slurm and a terminal do
    try:
        assert p.wait(timeout=LAUNCH_TIMEOUT) == code, "".join(lines)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    reader.join(timeout=10)
    text = "".join(lines)
    assert "Traceback" not in text, text
    last = [x for x in text.splitlines() if x.strip()][-1]
    assert says in last and "checkpoint" in last and ("resume" in last), text
    ckpt = tmp_path / "runs" / "sig" / "baseline" / "checkpoints"
    tag = (ckpt / "latest").read_text().strip()
    step = json.loads((ckpt / tag / "lakd_meta.json").read_text())["step"]
    assert step >= 2
    # the same command again resumes there (stopped again right away: only the resume line matters here)
    p, lines, reader = _start(args)
    deadline = time.time() + LAUNCH_TIMEOUT
    while not any("resuming at step" in x for x in list(lines)):
        assert p.poll() is None and time.time() < deadline, "".join(lines)
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert any(f"resuming at step {step}" in x for x in lines), "".join(lines)


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (the SigCgt mask of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


def test_pre_timeout_signal_during_start_up_is_kept_for_the_first_step(shards, tmp_path):
    """SIGUSR2 (the pre-timeout signal) while `lakd train` is still starting (here: blocked reading its config
    from a FIFO, before torch is even imported) is not fatal: the stage saves at its first step boundary and
    exits 75 for the requeue."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    args = ["--stage", "baseline", "--config", str(fifo),
            *tiny_args(shards, tmp_path / "runs", "early", **{"eval.every": 0})]
    p, lines, reader = _start(args)
    try:
        deadline = time.time() + LAUNCH_TIMEOUT
        while not _catches(p.pid, signal.SIGUSR2):
            assert p.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGUSR2)
        fifo.write_text("base: synthetic\n")  # unblocks the config read
        assert p.wait(timeout=LAUNCH_TIMEOUT) == 75, "".join(lines)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    reader.join(timeout=10)
    text = "".join(lines)
    assert "preempted by SIGUSR2 at step 1" in text, text
    ckpt = tmp_path / "runs" / "early" / "baseline" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step_00000001"
