"""`lakd demo` records how its plan was built (.sweep/source.json), so `lakd sweep status` and `collect` run in the
demo's runs folder show the demo's own sweep (its name, sizes and seeds), not the shipped sweep of the same file."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from lakd.commands import demo
from lakd.sweep import local
from lakd.sweep.slurm import write_plan_files


def _lakd_sweep(cwd, *args):
    return subprocess.run([sys.executable, "-m", "lakd.cli", "sweep", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture
def demo_dir(tmp_path, monkeypatch):
    """What `lakd demo --size tiny --seeds 2 --set noise.scale=10` leaves on disk when it is stopped right after the
    local executor wrote the plan (the real plan; no stage trained)."""
    def stop_after_plan(plan, **_):
        write_plan_files(plan)  # what run_local writes first
        raise local.Interrupted("stopped by the test")

    monkeypatch.setattr(local, "run_local", stop_after_plan)
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(out=str(tmp_path / "demo"), seeds=2, procs=1, size="tiny", examples=0,
                              overrides=["noise.scale=10"])
    assert demo.run(args) == 130
    (sweep_dir,) = (tmp_path / "demo" / "runs").iterdir()
    return sweep_dir


def test_status_and_collect_in_the_demo_runs_folder(demo_dir, tmp_path):
    source = json.loads((demo_dir / ".sweep/source.json").read_text())
    assert source["sweep"]["name"] == demo_dir.name and source["sweep"]["seeds"] == [0, 1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, args in ((demo_dir, ()), (elsewhere, (str(demo_dir),))):
        r = _lakd_sweep(cwd, "status", *args)
        assert r.returncode == 0, (cwd, r.stdout, r.stderr)
        lines = r.stdout.splitlines()
        assert lines[0] == f"sweep {demo_dir.name} in {demo_dir}", lines
        # the demo's stages: its tiny size (12 steps), both seeds, nothing trained yet
        stages = [x for x in lines if x.startswith(("teacher/", "student/", "baseline/"))]
        assert stages and all(" todo " in x for x in stages), lines
        assert any("_s1" in x or "-s1" in x for x in stages), stages
    r = _lakd_sweep(demo_dir, "collect")
    assert r.returncode in (0, 1) and "no sweep" not in r.stderr and "shipped sweep" not in r.stderr, r.stderr
