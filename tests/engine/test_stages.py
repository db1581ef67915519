"""Teacher, student and baseline stages train a few steps with 2 processes (gloo) on synthetic shards, each
started by a different launcher: torchrun, the deepspeed launcher, submitit (run_stage in-process)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lakd.net import free_port

from .helpers import base_env, collect, load_weights, tiny_args

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _check_stage(stage_dir: Path, stage: str, *, label_channels: int, world: int = 2) -> dict:
    result = json.loads((stage_dir / "result.json").read_text())
    assert result["stage"] == stage and result["steps"] == 6 and result["world_size"] == world
    assert result["model"]["in_channels"] == 3 + label_channels
    assert 0.0 <= result["eval"]["image"]["miou"] <= 1.0
    if stage == "teacher":
        assert set(result["eval"]) == {"image", "label"}  # zero channel and fixed label code
    meta = json.loads((stage_dir / f"{stage}.json").read_text())
    assert meta["label_channels"] == label_channels and meta["dataset"] == "synthetic"
    weights = load_weights(stage_dir / f"{stage}.safetensors")
    assert not any(k.startswith("module.") for k in weights)  # bare keys
    lines = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    for r in steps:
        assert {"lr", "loss", "terms", "images_per_s", "max_rss_mb", "time"} <= set(r)
    assert [r["step"] for r in lines if "eval" in r] == [3, 6]
    assert (stage_dir / "config.yaml").is_file()
    ckpts = stage_dir / "checkpoints"
    kept = sorted(p.name for p in ckpts.glob("step_*"))
    assert kept == ["step_00000003", "step_00000004", "step_00000006"]  # last 2 + best (step 3)
    assert (ckpts / "latest").read_text().strip() == "step_00000006"
    return result


def test_teacher_torchrun(shards, runs):
    args = tiny_args(shards, runs, "lad", **{"train.zero_stage": 1})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "lakd.cli", "train", "--stage", "teacher", "--config", "synthetic", *args]
    run = collect([subprocess.Popen(cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)])
    assert run.codes == [0], run.text
    assert "2 process(es) (env, cpu)" in run.outputs[0]
    _check_stage(runs / "lad" / "teacher", "teacher", label_channels=1)
    # CPU: plain BatchNorm per rank; the checkpoint's module holds the cross-rank average of the running
    # statistics, each rank's own (different) ones are in its lakd_rank file for an exact resume
    from lakd.engine.checkpoint import weights_only_load
    from lakd.engine.state_io import load_state

    tag = runs / "lad" / "teacher" / "checkpoints" / "step_00000006"
    saved = weights_only_load(tag / "mp_rank_00_model_states.pt")
    assert saved["lakd_step"] == 6 and saved["lakd_best"]["step"] == 3
    own = [load_state(tag / f"lakd_rank{r:05d}")["buffers"] for r in (0, 1)]
    key = next(k for k in own[0] if k.endswith("running_mean"))
    assert not torch.equal(own[0][key], own[1][key])
    for k in own[0]:
        assert torch.allclose(saved["module"][k], (own[0][k].double() + own[1][k].double()).div(2).float()), k


def test_student_deepspeed_launcher(shards, runs):
    if not (runs / "lad" / "teacher" / "teacher.safetensors").exists():
        pytest.skip("needs the teacher of test_teacher_torchrun")
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent))
    assert launcher, "the deepspeed launcher script is installed with deepspeed"
    args = tiny_args(shards, runs, "lad")
    cmd = [sys.executable, launcher, "--num_gpus", "2", "--master_port", str(free_port()), "--module",
           "lakd.cli", "train", "--stage", "student", "--config", "synthetic", *args]
    run = collect([subprocess.Popen(cmd, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)])
    assert run.codes == [0], run.text
    result = _check_stage(runs / "lad" / "student", "student", label_channels=0)
    assert result["teacher"] == {"export": str(runs / "lad" / "teacher" / "teacher.safetensors"),
                                 "label_channels": 1}
    terms = json.loads((runs / "lad" / "student" / "metrics.jsonl").read_text().splitlines()[0])["terms"]
    assert set(terms) == {"ce", "aux_ce", "kd"}


def test_baseline_submitit(shards, runs, tmp_path):
    submitit = pytest.importorskip("submitit")
    from lakd.config import load_config
    from lakd.engine.stage import run_stage

    cfg = load_config("synthetic", tiny_args(shards, runs, "base"), stage="baseline")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(tasks_per_node=2, timeout_min=10)
    env = base_env()
    import os

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the job processes inherit it: no launcher variables, 1 thread each
    try:
        job = executor.submit(run_stage, cfg)
        results = job.results()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert len(results) == 2 and results[0]["eval"] == results[1]["eval"]
    result = _check_stage(runs / "base" / "baseline", "baseline", label_channels=0)
    assert result["teacher"] is None
    out = (tmp_path / "submitit").glob("*_0_log.out")
    assert any("(submitit, cpu)" in p.read_text() + p.with_suffix(".err").read_text() for p in out)
