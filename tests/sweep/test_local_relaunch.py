"""A local sweep relaunched after a SIGKILL of the previous launcher: a stage that the killed launcher started keeps
running (its ranks have their own session), holding its stage folder's run lock (lakd.engine.runlock). The relaunch
sees the lock, says the stage is still running (pid and host), waits for it instead of counting it as failed, and
goes on: a stage the orphan finished is not trained again; one it left unfinished is started (and resumes)."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakd.sweep.local import run_local
from lakd.engine.runlock import lock_holder
from lakd.sweep.state import job_states

from .test_local_scheduler import _plan

REPO = Path(__file__).resolve().parents[2]
SLOWSTEP = REPO / "tests" / "slurm" / "slowstep"
TEACHER = "teacher/synthetic-plain_la"
STUDENT = "student/synthetic-plain-lad-plain_la-s0"

# stands in for `python -m lakd.cli train --stage S --config PATH`, with lakd train's folder lock (the real one):
# refused (exit 2, one line naming the holder) while another process holds the stage folder
FAKE_TRAIN = """#!{python}
import json, sys, time
sys.path.insert(0, {repo!r})
import yaml
from pathlib import Path
from lakd.engine.runlock import RunLock
cfg = yaml.safe_load(open(sys.argv[-1]))
stage_dir = Path(cfg["run"]["runs_dir"]) / cfg["run"]["name"] / sys.argv[-3]
stage_dir.mkdir(parents=True, exist_ok=True)
refused = RunLock(stage_dir).acquire()
if refused:
    print("lakd train: error: " + refused, file=sys.stderr)
    sys.exit(2)
with open({log!r}, "a") as f:
    f.write(f"start {{stage_dir}} {{time.time()}}\\n")
(stage_dir / "result.json").write_text(json.dumps({{"steps": 1}}))
"""

# the stage the killed launcher left behind: holds the folder lock, then finishes (or not) after `seconds`
ORPHAN = """
import json, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from lakd.engine.runlock import RunLock
stage_dir = Path({stage_dir!r})
stage_dir.mkdir(parents=True, exist_ok=True)
assert RunLock(stage_dir).acquire() is None
(stage_dir / "orphan.ready").write_text("")
time.sleep({seconds})
if {finish}:
    (stage_dir / "result.json").write_text(json.dumps({{"steps": 1}}))
"""


def _orphan(stage_dir: Path, *, seconds: float, finish: bool) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", ORPHAN.format(repo=str(REPO), stage_dir=str(stage_dir),
                                                              seconds=seconds, finish=finish)])
    t0 = time.monotonic()
    while not (stage_dir / "orphan.ready").exists():
        assert p.poll() is None and time.monotonic() - t0 < 30, "the orphan did not start"
        time.sleep(0.02)
    return p


def _relaunch(tmp_path, plan):
    log, fake = tmp_path / "train.log", tmp_path / "fakepython"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable, repo=str(REPO), log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    lines: list[str] = []
    report = run_local(plan, parallel=2, retries=0, python=str(fake), log=lines.append, poll_s=0.02)
    started = [Path(x.split()[1]) for x in log.read_text().splitlines()] if log.exists() else []
    return report, lines, started


@pytest.mark.parametrize("finish", [True, False], ids=["orphan-finishes", "orphan-dies-unfinished"])
def test_relaunch_waits_for_a_stage_still_running(tmp_path, finish):
    plan = _plan(tmp_path, seeds=(0,))
    teacher_dir = Path(plan.jobs[TEACHER].stage_dir)
    orphan = _orphan(teacher_dir, seconds=1.5, finish=finish)
    try:
        holder = lock_holder(teacher_dir)
        assert holder is not None and holder["pid"] == orphan.pid, holder
        # status sees it too (no Slurm job: the lock is the only trace of it)
        st = job_states(plan, query_slurm=False)[TEACHER]
        assert st.state == "running" and f"pid {orphan.pid} on " in st.detail, (st.state, st.detail)
        report, lines, started = _relaunch(tmp_path, plan)
    finally:
        orphan.kill()
        orphan.wait()
    assert report.ok and not report.failed and not report.blocked, (report, lines)
    said = [x for x in lines if x.split(": ", 1)[0].endswith(TEACHER)]
    assert any(f"still running (pid {orphan.pid} on " in x and "waiting for it" in x for x in said), said
    assert STUDENT in report.ran  # its dependant ran once the teacher was there
    if finish:  # finished by the orphan: never trained again
        assert teacher_dir not in started and TEACHER not in report.ran, (started, said)
        assert any("finished by that run" in x for x in said), said
    else:  # the orphan ended without a result: started now, after the orphan let go of the folder
        assert started.count(teacher_dir) == 1 and TEACHER in report.ran, (started, said)
        assert any("ended without finishing" in x for x in said), said
    assert lock_holder(teacher_dir) is None
    assert json.loads((teacher_dir / "result.json").read_text()) == {"steps": 1}


def test_a_free_or_missing_stage_folder_has_no_holder(tmp_path):
    assert lock_holder(tmp_path / "nothing-here") is None
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "h", "since": 0}))  # left by a run that ended
    assert lock_holder(tmp_path) is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_relaunched_after_sigkill_waits_for_its_orphans(tmp_path):
    """The real thing: `lakd demo --size tiny` SIGKILLed while its first stages train; the stages live on (own
    session), and the relaunch waits for them and finishes the demo without a failed stage."""
    import os
    import signal

    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "lakd.cli", "demo", "--size", "tiny", "--seeds", "1", "--examples", "0",
           "--procs", "2", "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the first launch's stages take >= 12 s (tests/slurm/slowstep): still running when the relaunch looks
    slow = dict(env, LAKD_TEST_STEP_DELAY="1.0",
                PYTHONPATH=os.pathsep.join(p for p in (str(SLOWSTEP), env.get("PYTHONPATH", "")) if p))
    first = subprocess.Popen(cmd, cwd=tmp_path, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def held() -> list[Path]:
        return [p.parent for p in out.glob("runs/*/*/*/.lock") if lock_holder(p.parent) is not None]

    t0 = time.monotonic()
    while not held():
        assert first.poll() is None and time.monotonic() - t0 < 240, "no stage started"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    orphans = {d: lock_holder(d)["pid"] for d in held()}
    assert orphans, "the stages died with the launcher: nothing to test"
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    for stage_dir, pid in orphans.items():
        assert f"still running (pid {pid} on " in log, log[-4000:]
        assert (stage_dir / "result.json").exists()
    assert "exit status" not in log and "stages failed" not in log, log[-4000:]
