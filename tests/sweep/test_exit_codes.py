"""The sweep's batch step acts on lakd.exit_codes (the one home of exit statuses), and its requeue decision
imports neither the engine nor torch: it runs on a node that may be loaded or half broken."""
from __future__ import annotations

import subprocess
import sys

from lakd import exit_codes
from lakd.sweep.requeue import FINAL_STATUSES, decide


def test_decisions_follow_the_exit_codes_module():
    kw = dict(restarts=0, failures=0, max_requeues=3, retries=2)
    assert decide(exit_codes.OK, **kw) == "done"
    assert decide(exit_codes.REQUEUE, **kw) == "requeue"
    assert decide(exit_codes.USAGE, **kw) == "give_up" and decide(exit_codes.DIVERGED, **kw) == "give_up"
    assert decide(exit_codes.FAILED, **kw) == "retry" and decide(128 + 9, **kw) == "retry"
    assert FINAL_STATUSES == {exit_codes.USAGE, exit_codes.DIVERGED}


def test_the_batch_step_does_not_import_the_engine():
    code = ("import sys, lakd.sweep.batch, lakd.sweep.requeue as r\n"
            "[r.decide(c, restarts=0, failures=0, max_requeues=1, retries=1) for c in range(256)]\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lakd.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
