"""Precision and compile: fp16 through DeepSpeed's fp16 block (dynamic loss scaling), the bf16-on-CPU warning,
train.compile giving the eager model's losses."""
from __future__ import annotations

import json

import pytest

from lakd.config import ConfigError, load_config
from lakd.engine.stage import run_stage

from .helpers import LAUNCHER_VARS, tiny_args

NO_DROPOUT = {"model.options": "{dropout: 0.0}"}  # same masks are not promised across modes


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)


def _losses(stage_dir):
    return [r for r in map(json.loads, (stage_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_fp16_loss_scaling_trains_like_fp32(shards, tmp_path):
    runs = tmp_path / "runs"
    common = {"train.iters": 5, "eval.every": 0, "checkpoint.every": 5, "train.zero_stage": 1, **NO_DROPOUT}
    for name, precision in (("f32", "fp32"), ("f16", "fp16")):
        run_stage(load_config("synthetic", tiny_args(shards, runs, name, **common, **{"train.precision": precision}),
                              stage="baseline"))
    ref, half = _losses(runs / "f32" / "baseline"), _losses(runs / "f16" / "baseline")
    assert all(r["loss_scale"] > 0 and "skipped_steps" in r for r in half)
    assert "loss_scale" not in ref[0]
    assert half[-1]["loss"] < half[0]["loss"]  # the weights move (ZeRO-0's unfused fp16 optimizer did not)
    for a, b in zip(ref, half):
        assert abs(a["loss"] - b["loss"]) < 0.03 * a["loss"], (a["loss"], b["loss"])
    ds = json.loads((runs / "f16" / "baseline" / "deepspeed_config.json").read_text())
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0  # dynamic


def test_fp16_at_zero_stage_0_is_refused():
    with pytest.raises(ConfigError, match="fp16 needs train.zero_stage 1 or 2"):
        from lakd.engine.ds_engine import deepspeed_config

        deepspeed_config(load_config("synthetic", ["train.precision=fp16"]), 1, 8, 1)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns(shards, tmp_path, capsys, monkeypatch, native):
    monkeypatch.setattr("lakd.engine.stage.cpu_has_native_bf16", lambda: native)
    run_stage(load_config("synthetic", tiny_args(shards, tmp_path, "b", **{"train.iters": 1, "eval.every": 0,
                                                                           "train.precision": "bf16"}),
                          stage="baseline"))
    warned = "train.precision=bf16 on a CPU without native bfloat16" in capsys.readouterr().err
    assert warned is not native


@pytest.mark.slow
def test_compile_gives_the_eager_losses(shards, tmp_path):
    runs = tmp_path / "runs"
    common = {"train.iters": 2, "eval.every": 0, "checkpoint.every": 2, "model.aux": "false", **NO_DROPOUT}
    for name, compiled in (("eager", "false"), ("compiled", "true")):
        run_stage(load_config("synthetic", tiny_args(shards, runs, name, **common, **{"train.compile": compiled}),
                              stage="baseline"))
    eager, compiled = _losses(runs / "eager" / "baseline"), _losses(runs / "compiled" / "baseline")
    assert len(eager) == len(compiled) == 2
    for a, b in zip(eager, compiled):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * a["loss"], (a["loss"], b["loss"])
    result = json.loads((runs / "compiled" / "baseline" / "result.json").read_text())
    assert result["eval"]["image"]["miou"] == pytest.approx(
        json.loads((runs / "eager" / "baseline" / "result.json").read_text())["eval"]["image"]["miou"], abs=1e-3)
