"""Two jobs on one stage folder: the second is refused (exit 2, the holder's pid and host), so they cannot
delete each other's checkpoints or replace each other's results."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .helpers import LAUNCH_TIMEOUT, base_env, tiny_args

pytestmark = pytest.mark.slow


def test_two_configs_started_together_on_one_run_dir(shards, tmp_path):
    runs = tmp_path / "runs"
    procs = []
    for lr in ("0.02", "0.01"):
        args = ["--stage", "baseline", "--config", "synthetic",
                *tiny_args(shards, runs, "shared", **{"optim.lr": lr, "eval.every": 0, "checkpoint.every": 1})]
        procs.append(subprocess.Popen([sys.executable, "-m", "lakd.cli", "train", *args], env=base_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=LAUNCH_TIMEOUT)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    refusal = outs[loser].strip().splitlines()[-1]
    assert "is in use by another run (pid " in refusal or "different configuration" in refusal, outs[loser]
    stage = runs / "shared" / "baseline"
    result = json.loads((stage / "result.json").read_text())
    config = (stage / "config.yaml").read_text()
    assert f"lr: {('0.02', '0.01')[winner]}" in config  # the folder holds the winner's run, config included
    assert result["steps"] == 6 and "Traceback" not in outs[winner]
