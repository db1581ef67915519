"""benchmarks/label_use/run.py (the investigation behind docs/method.md section 6) still runs: a few steps on
every task of benchmarks/label_use/tasks.py, including the retired synthetic v2 and the shipped version 3."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "label_use" / "run.py"
sys.path.insert(0, str(SCRIPT.parent))
import tasks  # noqa: E402


@pytest.mark.parametrize("task", sorted(tasks.TASKS))
def test_task_generators_are_deterministic_and_valid(task):
    gen, classes = tasks.get(task, 32, 5)
    (a, la), (b, lb) = gen(3), gen(3)
    assert a.shape == (32, 32, 3) and a.dtype.name == "uint8" and la.shape == (32, 32)
    assert (a == b).all() and (la == lb).all() and int(la.max()) < classes


def test_run_writes_one_result_line(tmp_path):
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, str(SCRIPT), "--task", "synthetic", "--ntrain", "32", "--nval", "25", "--steps", "2",
           "--model", "fcn-plaincnn", "--opts", '{"num_convs": 1, "concat_input": false}', "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = out.read_text().splitlines()
    r = json.loads(line)
    for key in ("label", "zero", "image"):
        assert 0.0 <= r[key] <= 100.0
