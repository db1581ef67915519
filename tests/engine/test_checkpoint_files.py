"""The checkpoint directory without training: pickle-free state files, the `latest` pointer, retention,
weights-only loading."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from lakd.engine import rng
from lakd.engine.checkpoint import BEST, LATEST, META, CheckpointManager, tag_for, weights_only_load
from lakd.engine.state_io import load_state, save_state


def test_state_roundtrip_keeps_types(tmp_path):
    rng.seed_all(3)
    value = {"loader": {"step": 7, "workers": [{"epoch": 1, "pos": 5}]},
             "buffers": {"bn.running_mean": torch.randn(4)}, "t": (1, 2.5, None), 3: "int key"}
    value["rng"] = rng.capture()
    save_state(tmp_path / "s", value)
    back = load_state(tmp_path / "s")
    assert back["loader"] == value["loader"] and back["t"] == (1, 2.5, None) and back[3] == "int key"
    assert torch.equal(back["buffers"]["bn.running_mean"], value["buffers"]["bn.running_mean"])
    expected = (random.random(), np.random.rand(), torch.rand(3))
    rng.seed_all(99)
    rng.restore(back["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    assert back["rng"]["numpy"][1].dtype == np.uint32


def _fake_checkpoint(d, step, complete=True):
    tag = tag_for(step)
    (d / tag).mkdir(parents=True)
    (d / tag / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        (d / tag / META).write_text(json.dumps({"complete": True, "tag": tag, "step": step, "world_size": 1}))
    return tag


def test_latest_only_names_complete_checkpoints(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2)
    assert m.latest() is None
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 4)
    _fake_checkpoint(tmp_path, 6, complete=False)  # a save killed before its marker
    (tmp_path / LATEST).write_text(tag_for(2))  # pointer lags: killed between marker and pointer
    assert m.latest()["step"] == 4
    (tmp_path / LATEST).write_text(tag_for(6))  # a pointer naming an incomplete folder is ignored
    assert m.latest()["step"] == 4
    assert m.remove_incomplete() == [tag_for(6)] and not (tmp_path / tag_for(6)).exists()


def test_prune_keeps_last_n_and_best(tmp_path):
    m = CheckpointManager(tmp_path, keep_last=2, keep_best=True)
    for s in (2, 4, 6, 8, 10):
        _fake_checkpoint(tmp_path, s)
    (tmp_path / LATEST).write_text(tag_for(10))
    (tmp_path / BEST).write_text(tag_for(4))
    m.prune()
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [tag_for(4), tag_for(8), tag_for(10)]
    assert m.best_tag() == tag_for(4)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_weights_only_load_refuses_pickled_code(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"module": {"w": torch.ones(2)}, "global_steps": 3, "ds_version": "x"}, good)
    assert weights_only_load(good)["global_steps"] == 3
    bad = tmp_path / "bad.pt"
    torch.save({"module": _Evil()}, bad)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(Exception, match="Weights only load failed"):
            weights_only_load(bad)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()
