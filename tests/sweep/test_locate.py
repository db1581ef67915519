"""`lakd sweep status|collect` find the sweep from any directory (PATH, a folder inside the sweep, or the sweep's
own place) and build its plan from what the run recorded; where there is none they say so in one line (exit 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from lakd.sweep import make_plan
from lakd.sweep.locate import find_sweep_dir, recipe, spec_of
from lakd.sweep.slurm import write_plan_files
from lakd.sweep.spec import resolve_source

TEACHER = "synthetic-dlv3_r18_la/teacher"


def _sweep(tmp_path) -> Path:
    """The tiny sweep, recorded as `lakd sweep --sweep s.yaml --set train.iters=7` run in ``tmp_path/project``
    would record it (relative runs_dir and shards_dir), with the teacher stopped at a checkpoint of step 3."""
    project = tmp_path / "project"
    project.mkdir()
    raw = yaml.safe_load(resolve_source("tiny").read_text())
    raw.update(runs_dir="runs", overrides={"data.shards_dir": "shards"})
    (project / "s.yaml").write_text(yaml.safe_dump(raw))
    cwd = Path.cwd()
    os.chdir(project)
    try:
        plan = make_plan(spec_of("s.yaml", None, ("train.iters=7",)),
                         source=recipe("s.yaml", None, ("train.iters=7",)))
        write_plan_files(plan)
    finally:
        os.chdir(cwd)
    stage = plan.sweep_dir / TEACHER
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "checkpoints" / "latest").write_text("step_00000003")
    (stage / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    return plan.sweep_dir


def _lakd(cwd, *args):
    return subprocess.run([sys.executable, "-m", "lakd.cli", "sweep", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_status_and_collect_from_anywhere(tmp_path):
    sweep_dir = _sweep(tmp_path)
    assert sweep_dir == tmp_path / "project/runs/tiny"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, args in ((sweep_dir / TEACHER, ()), (elsewhere, (str(sweep_dir / TEACHER),)),
                      (elsewhere, ("--sweep-dir", str(sweep_dir))), (tmp_path / "project", ("--sweep", "s.yaml"))):
        r = _lakd(cwd, "status", *args)
        assert r.returncode == 0, (cwd, args, r.stderr)
        assert r.stdout.splitlines()[0] == f"sweep tiny in {sweep_dir}", (cwd, args, r.stdout)
        line = next(x for x in r.stdout.splitlines() if x.startswith("teacher/synthetic-dlv3_r18_la "))
        # built from the recorded recipe: the --set iteration count, relative paths from the launcher's folder
        assert " partial " in line and "step 3/7" in line, line
    r = _lakd(elsewhere, "collect", str(sweep_dir))
    assert r.returncode == 0, r.stderr
    assert (sweep_dir / "results.md").exists() and (sweep_dir / "results.csv").exists()


def test_no_sweep_there_is_one_line_and_exit_2(tmp_path):
    sweep_dir = _sweep(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [((empty, "status"), f"no sweep 'paper' at {empty}/runs/paper, and none in {empty} or a folder above it"),
             ((empty, "collect", str(tmp_path / "project")),
              f"no sweep at {tmp_path / 'project'} (no .sweep/plan.json"),
             ((empty, "status", "--sweep", "tiny"), f"no sweep 'tiny' at {empty}/runs/tiny: pass the sweep directory")]
    for (cwd, *args), message in cases:
        r = _lakd(cwd, *args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"sweep: error: {message}"), (args, lines)
    assert sorted(p.name for p in empty.iterdir()) == [] and not (sweep_dir / "results.md").exists()
    assert find_sweep_dir(sweep_dir / "a/b/c") == sweep_dir and find_sweep_dir(tmp_path) is None
