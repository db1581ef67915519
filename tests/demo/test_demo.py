"""`lakd demo` end to end at the tiny size (a real run: shards, local sweep, report), and its bad-input errors."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lakd.commands.demo import SIZES, demo_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _lakd(*args, cwd, timeout=60):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "lakd.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = _lakd("demo", "--size", "tiny", "--seeds", "1", "--out", str(out), "--examples", "2", cwd=tmp_path,
                 timeout=290)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    # progress the whole way: the plan, every job of the sweep, the training steps, the report
    assert "plan: build shards, then 6 training stages (2 at a time)" in log
    for i in range(1, 9):
        assert f"[{i}/8]" in log
    assert "step 12/12" in log and "step 6/6" in log  # baselines and teachers; fine-tuned students
    # independent stages run side by side: a second stage starts before the first one ended
    events = [line for line in log.splitlines() if line.startswith("[demo") and "] [" in line]
    running, most = 0, 0
    for line in events:
        if " -> " in line:
            running += 1
            most = max(most, running)
        elif ": done in " in line and "shards/" not in line and "collect" not in line:
            running -= 1
    assert most == 2, events
    # the closing summary says where everything is
    for what in ("report ", "figures ", "runs ", "exports ", "shards "):
        assert f"  {what}" in log

    report_dir = out / "report_tiny"
    report = (report_dir / "report.md").read_text()
    for heading in ("## Results", "## Per-class IoU: synthetic", "## Figures", "## Runs"):
        assert heading in report
    for title in ("Student, baseline", "Student, baseline fine-tuned (control)", "Student, KD (image-only teacher)",
                  "Student, LAD (label-assisted teacher)"):
        (row,) = [line for line in report.split("## Per-class")[0].splitlines() if line.startswith(f"| {title} |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert 0.0 <= float(cells[2]) <= 100.0, row  # seed 0, percent
    for cls in ("background", "red", "white"):  # per-class rows named from the dataset card
        assert f"| {cls} |" in report

    summary = json.loads((report_dir / "summary.json").read_text())
    (block,) = summary["blocks"]
    assert [s["role"] for s in block["students"]] == ["baseline", "finetune", "kd", "lad"]
    assert all(s["miou_pct"]["n"] == 1 and 0.0 <= s["miou_pct"]["mean"] <= 100.0 for s in block["students"])
    assert sorted(t["role"] for t in block["teachers"]) == ["teacher_image", "teacher_label", "teacher_label"]
    assert len(summary["runs"]) == 6 and all(0.0 <= r["miou_pct"] <= 100.0 for r in summary["runs"])

    for name in ("roles.png", "loss_curves.png", "miou_curves.png", "examples.png"):
        png = report_dir / "figures" / name
        assert png.stat().st_size > 10_000
        w, h = _png_size(png)
        assert w >= 400 and h >= 300, (name, w, h)
        assert f"figures/{name}" in report

    # running it again reuses every finished stage and rewrites the report
    again = _lakd("demo", "--size", "tiny", "--seeds", "1", "--out", str(out), "--examples", "0", cwd=tmp_path,
                  timeout=120)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert again.stdout.count("finished earlier, skipped") == 8  # shards, 6 stages, collect
    assert "step 1/" not in again.stdout + again.stderr


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--procs", "0"], "--procs must be >= 1"),
    (["--set", "noise.scale"], "expected KEY=VALUE"),
    (["--set", "nosuch.key=1"], "nosuch"),
])
def test_demo_bad_input(tmp_path, args, message):
    proc = _lakd("demo", "--out", str(tmp_path / "d"), *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "d").exists()  # nothing written


def test_demo_spec_sizes(tmp_path):
    spec = demo_spec(tmp_path, "tiny", 3, {"noise.scale": 10})
    assert spec["seeds"] == [0, 1, 2] and spec["teacher_seed"] == 0
    assert spec["runs_dir"] == str(tmp_path / "runs")
    assert spec["overrides"]["noise.scale"] == 10
    assert spec["name"].startswith("demo_tiny_")  # overrides: a folder of their own, finished runs not reused
    assert spec["name"] != demo_spec(tmp_path, "tiny", 3, {"noise.scale": 3})["name"]
    assert demo_spec(tmp_path, "tiny", 1)["name"] == "demo_tiny"
    assert spec["overrides"]["train.iters"] == SIZES["tiny"]["overrides"]["train.iters"]
    (ds,) = spec["datasets"].values()
    assert ds["overrides"]["data.shards_dir"] == str(tmp_path / "shards" / "tiny")
    assert ds["shards"]["splits"]["val"]["num_samples"] == SIZES["tiny"]["val_samples"]
