"""The slow-step helper of the Slurm tests (tests/slurm/slowstep) acts through a registered callback: every
stage the process runs sleeps before each step with it on PYTHONPATH and LAKD_TEST_STEP_DELAY set, and not
otherwise. Runs without the cluster."""
from __future__ import annotations

import os
import subprocess
import sys

from slurmtest import SLOWSTEP

# what run_stage does with the registered callbacks at each step start (lakd.engine.stage / trainer)
PROBE = """
import time
from lakd.engine.callbacks import emit, registered
t = time.perf_counter()
emit(registered(), "on_step_start", None, 0)
print(len(registered()), round(time.perf_counter() - t, 3))
"""


def _probe(delay: str) -> tuple[int, float]:
    repo = str(SLOWSTEP.parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SLOWSTEP), repo]), LAKD_TEST_STEP_DELAY=delay)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    n, seconds = out.stdout.split()
    return int(n), float(seconds)


def test_steps_are_slowed_by_a_registered_callback():
    n, seconds = _probe("0.4")
    assert n == 1 and seconds >= 0.4
    assert _probe("")[0] == 0  # no delay asked: nothing registered
