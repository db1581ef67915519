"""DeepSpeed as a DeepSpeed user drives it: a user's JSON merged over lakd's config (invariants refused in one
line, nothing written), the resolved config in the run dir, ZeRO-2 on 2 processes, --local_rank."""
from __future__ import annotations

import json
import os

import pytest

from lakd.cli import main
from lakd.commands.train import apply_local_rank
from lakd.config import ConfigError, load_config
from lakd.engine.ds_engine import deepspeed_config, merge_user_config, resolved_deepspeed_config

from .helpers import assert_same_weights, launch, tiny_args


def _base(**over):
    cfg = load_config("synthetic", [f"{k}={v}" for k, v in over.items()], stage="baseline")
    return cfg, deepspeed_config(cfg, 2, 2, 1)


def test_user_keys_merge_over_lakds_config():
    _, base = _base(**{"train.zero_stage": 2})
    user = {"zero_optimization": {"stage": 2, "reduce_bucket_size": 1000000, "overlap_comm": True},
            "csv_monitor": {"enabled": True, "output_path": "/x", "job_name": "j"}, "steps_per_print": 10,
            "train_batch_size": base["train_batch_size"]}  # lakd's own value: allowed
    merged = merge_user_config(base, user, "ds.json")
    assert merged["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000000, "overlap_comm": True}
    assert merged["csv_monitor"]["enabled"] and merged["steps_per_print"] == 10
    assert merged["gradient_clipping"] == base["gradient_clipping"]


def test_fp16_loss_scaling_knobs_are_the_users():
    cfg, base = _base(**{"train.precision": "fp16", "train.zero_stage": 1})
    merged = merge_user_config(base, {"fp16": {"loss_scale_window": 50, "initial_scale_power": 8}}, "ds.json")
    assert merged["fp16"]["enabled"] and merged["fp16"]["loss_scale_window"] == 50
    assert merged["fp16"]["loss_scale"] == 0  # dynamic
    assert merged["data_types"]["buffer_dtype"] == "fp16"


@pytest.mark.parametrize("user, words", [
    ({"zero_optimization": {"stage": 3}}, ["'zero_optimization.stage' to 3", "train.zero_stage"]),
    ({"train_micro_batch_size_per_gpu": 7}, ["train_micro_batch_size_per_gpu", "train.micro_batch_size"]),
    ({"gradient_clipping": 5.0}, ["gradient_clipping", "train.grad_clip"]),
    ({"fp16": {"enabled": True}}, ["'fp16.enabled' to True", "train.precision"]),
    ({"bf16": {"enabled": True}}, ["'bf16'", "BatchNorm"]),
    ({"optimizer": {"type": "Adam"}}, ["'optimizer'", "optim."]),
    ({"scheduler": {"type": "WarmupLR"}}, ["'scheduler'", "poly schedule"]),
])
def test_a_conflicting_key_is_one_clear_error(user, words):
    _, base = _base()
    with pytest.raises(ConfigError) as exc:
        merge_user_config(base, user, "ds.json")
    text = str(exc.value)
    assert text.startswith("config key 'train.deepspeed': ds.json") and "\n" not in text
    assert all(w in text for w in words), text


def test_lakd_train_refuses_a_conflicting_or_broken_file_before_writing(shards, tmp_path, capsys):
    runs = tmp_path / "runs"
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (bad, broken, tmp_path / "missing.json"):
        rc = main(["train", "--stage", "baseline", "--config", "synthetic",
                   *tiny_args(shards, runs, "ds", **{"train.deepspeed": str(path)})])
        assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(x.startswith("lakd train: error: config key 'train.deepspeed'") for x in lines)
    assert "'zero_optimization.stage' to 1" in lines[0] and "not a JSON file" in lines[1]
    assert not runs.exists()


def test_local_rank_argument_sets_local_rank(monkeypatch, capsys):
    env = {"RANK": "3", "WORLD_SIZE": "4"}  # torch.distributed.launch without --use-env: no LOCAL_RANK
    apply_local_rank(1, env)
    assert env["LOCAL_RANK"] == "1"
    apply_local_rank(1, env)  # the deepspeed launcher: both, agreeing
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--stage", "baseline", "--config", "synthetic", "--local_rank=2", "--show-config"]) == 2
    assert "disagrees with the environment's LOCAL_RANK=0" in capsys.readouterr().err
    monkeypatch.delenv("LOCAL_RANK")
    for argv in (["--local_rank=0", "train"], ["train", "--local-rank", "0"], ["train", "--local_rank=0"]):
        assert main([*argv, "--stage", "baseline", "--config", "synthetic", "--show-config"]) == 0
        assert os.environ.pop("LOCAL_RANK") == "0"


@pytest.mark.distributed
@pytest.mark.slow
def test_zero2_on_two_processes_equals_zero1_with_a_user_file(shards, tmp_path):
    runs = tmp_path / "runs"
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 200000, "allgather_bucket_size": 200000},
                                "csv_monitor": {"enabled": True, "output_path": str(tmp_path / "csv"),
                                                "job_name": "z2"}}))
    for name, extra in (("z1", {"train.zero_stage": 1}),
                        ("z2", {"train.zero_stage": 2, "train.deepspeed": str(user)})):
        run = launch(2, ["--stage", "baseline", "--config", "synthetic", *tiny_args(shards, runs, name, **extra)])
        assert run.codes == [0, 0], run.text
    written = json.loads((runs / "z2" / "baseline" / "deepspeed_config.json").read_text())
    assert written["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 200000,
                                            "allgather_bucket_size": 200000}
    assert written["train_batch_size"] == 4 and written["train_micro_batch_size_per_gpu"] == 2
    assert json.loads((runs / "z1" / "baseline" / "deepspeed_config.json").read_text())["zero_optimization"] == \
        {"stage": 1}
    # ZeRO-2 partitions gradients as well as the optimizer state: the same training, bitwise, on CPU
    assert_same_weights(runs / "z1" / "baseline" / "baseline.safetensors",
                        runs / "z2" / "baseline" / "baseline.safetensors")
    assert list((tmp_path / "csv").rglob("*.csv")), "DeepSpeed's own CSV monitor wrote nothing"


def test_resolved_config_is_what_initialize_gets(tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"wall_clock_breakdown": True}))
    cfg = load_config("synthetic", [f"train.deepspeed={user}"], stage="baseline")
    ds = resolved_deepspeed_config(cfg, 1, 8, 1)
    assert ds["wall_clock_breakdown"] is True and ds["train_batch_size"] == 8
