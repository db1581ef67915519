"""Exact resume, preemption, a SIGKILL while a checkpoint is written, world-size change, NaN loss.

Real processes, real DeepSpeed on gloo. The reference is an uninterrupted run of the same config; an
interrupted run must end with bitwise-identical final weights (teacher stage: dual path, label noise from
the global RNG, eval at step 3; ZeRO 1 at world size 2 so the partitioned optimizer state is restored too).
"""
from __future__ import annotations

import json

import pytest

from .helpers import assert_same_weights, launch, tiny_args
from lakd.engine.preemption import EXIT_REQUEUE
from lakd.engine.trainer import EXIT_DIVERGED

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _ok(run) -> None:
    assert run.codes == [0] * len(run.codes), run.text


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def reference(shards, runs):
    """Uninterrupted teacher runs, world sizes 1 (no launcher variables, ZeRO 0) and 2 (ZeRO 1)."""
    out = {}
    for world in (1, 2):
        name = f"ref{world}"
        _ok(launch(world, ["--stage", "teacher", "--config", "synthetic",
                           *tiny_args(shards, runs, name, **{"train.zero_stage": world - 1})], single=world == 1))
        out[world] = runs / name / "teacher"
    return out


@pytest.mark.parametrize("world", [1, 2])
def test_preempt_then_resume_is_bitwise_exact(shards, runs, reference, world):
    name = f"pre{world}"
    args = ["--stage", "teacher", "--config", "synthetic",
            *tiny_args(shards, runs, name, **{"train.zero_stage": world - 1})]
    # SIGUSR1 reaches only the last rank, during step 3 (an evaluation step): all ranks must agree to stop
    first = launch(world, args, hook=f"signal:{world - 1}:3", single=world == 1)
    assert first.codes == [EXIT_REQUEUE] * world, first.text
    assert "preempted by SIGUSR1 at step 3" in first.outputs[world - 1]
    ckpts = runs / name / "teacher" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000003"
    assert not (runs / name / "teacher" / "result.json").exists()

    second = launch(world, args, single=world == 1)
    _ok(second)
    assert "resuming at step 3" in second.outputs[0]
    stage = runs / name / "teacher"
    assert_same_weights(reference[world] / "teacher.safetensors", stage / "teacher.safetensors")
    ref, res = (json.loads((d / "result.json").read_text()) for d in (reference[world], stage))
    assert res["eval"] == ref["eval"] and res["best"] == ref["best"] and res["steps"] == 6
    # metrics.jsonl reads like one run: every step once, the evaluation of step 3 done after the resume
    lines = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in lines if "eval" in r] == [3, 6]


def test_sigkill_while_saving_then_resume(shards, runs, reference):
    """Rank 0 dies writing DeepSpeed's model file of step 4: `latest` keeps naming step 3, the partial
    folder is never loaded, and the resumed run ends exactly like the uninterrupted one."""
    name = "kill"
    args = ["--stage", "teacher", "--config", "synthetic", *tiny_args(shards, runs, name, **{"train.zero_stage": 1})]
    first = launch(2, args, hook="kill_save:0:4")
    assert first.codes[0] == -9, first.text
    assert first.codes[1] != 0, first.text  # the peer notices the dead rank instead of hanging
    ckpts = runs / name / "teacher" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000003"
    assert (ckpts / "step_00000004").is_dir() and not (ckpts / "step_00000004" / "lakd_meta.json").exists()

    second = launch(2, args)
    _ok(second)
    assert "removed incomplete checkpoint(s) step_00000004" in second.outputs[0]
    assert "resuming at step 3" in second.outputs[0]
    assert_same_weights(reference[2] / "teacher.safetensors", runs / name / "teacher" / "teacher.safetensors")


def test_world_size_change_takes_the_documented_path(shards, runs):
    name = "ws"
    args = ["--stage", "baseline", "--config", "synthetic", *tiny_args(shards, runs, name, **{"train.zero_stage": 1})]
    first = launch(2, args, hook="signal:0:2")
    assert first.codes == [EXIT_REQUEUE] * 2, first.text
    second = launch(1, args)
    _ok(second)
    out = second.outputs[0]
    assert "different set-up (world size 2 -> 1)" in out and "momentum restarts from zero" in out
    assert "Traceback" not in out
    result = json.loads((runs / name / "baseline" / "result.json").read_text())
    assert result["steps"] == 6 and result["world_size"] == 1
    lr = [json.loads(line) for line in (runs / name / "baseline" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in lr if "lr" in r}
    # the schedule continues where it stopped: lr(3) = 0.05 (the synthetic preset) * (1 - 2/6) ** 0.9
    assert lr[3] == pytest.approx(0.05 * (1 - 2 / 6) ** 0.9, rel=1e-9)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(shards, runs):
    name = "nan"
    args = ["--stage", "baseline", "--config", "synthetic", *tiny_args(shards, runs, name)]
    run = launch(2, args, hook="nan:1:5")  # only rank 1 sees NaN; both must stop at step 5
    assert run.codes == [EXIT_DIVERGED] * 2, run.text
    assert "non-finite loss at step 5" in run.outputs[0]
    assert "checkpoints/step_00000004" in run.outputs[0]
    ckpts = runs / name / "baseline" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000004"
    assert not (ckpts / "step_00000005").exists()
    assert not (runs / name / "baseline" / "result.json").exists()
