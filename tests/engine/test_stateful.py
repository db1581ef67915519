"""The checkpoint parts saved and restored from one named mapping (lakd.engine.checkpoint.rank_parts), through
the pickle-free state files, without DeepSpeed: what is captured comes back exactly."""
from __future__ import annotations

import random

import numpy as np
import torch

from lakd.engine.batchnorm import float_buffers
from lakd.engine.checkpoint import PORTABLE, capture, rank_parts, restore
from lakd.engine.state_io import load_state, save_state
from lakd.engine.trainer import TrainState


class Stream:
    def __init__(self):
        self.position = 0

    def state_dict(self):
        return {"step": self.position, "order": np.arange(3, dtype=np.uint32)}

    def load_state_dict(self, sd):
        assert sd["order"].dtype == np.uint32
        self.position = sd["step"]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_every_part_comes_back_exactly_through_the_state_files(tmp_path):
    model, stream = _model(), Stream()
    model(torch.randn(2, 3, 5, 5))  # running statistics move away from their initial values
    stream.position = 7
    parts = rank_parts(stream, model, average_bn=True)
    assert list(parts) == ["loader", "buffers", "rng"]  # generators last: restoring the others draws nothing
    save_state(tmp_path / "rank0", capture(parts))
    expected_draws = _draws()
    own = {k: v.clone() for k, v in float_buffers(model).items()}  # the rest is in the engine's checkpoint

    model(torch.randn(2, 3, 5, 5))  # everything moves on
    stream.position = 99
    restore(parts, load_state(tmp_path / "rank0"))
    assert stream.position == 7
    assert own.keys() == float_buffers(model).keys() and len(own) == 2
    assert all(torch.equal(own[k], v) for k, v in float_buffers(model).items())
    assert _draws() == expected_draws


def test_buffers_are_kept_only_when_averaged_and_only_portable_parts_cross_a_layout_change():
    model, stream = _model(), Stream()
    parts = rank_parts(stream, model, average_bn=False)
    state = capture(parts)
    assert state["buffers"] is None
    stream.position = 3
    before = _draws()
    restore(parts, {**state, "rng": "never read"}, PORTABLE)  # only the stream's position is loaded
    assert stream.position == 0 and PORTABLE == ("loader",)
    assert _draws() != before  # the generators went on


def test_train_state_round_trips_through_the_checkpoint_meta():
    st = TrainState(step=12, best={"step": 8, "score": 0.5}, seconds=3.25,
                    history=[{"step": 4, "score": 0.2}, {"step": 8, "score": 0.5}], pending_eval=True)
    meta = {**st.state_dict(), "complete": True, "tag": "step_00000012", "world_size": 2}  # as the manager adds
    back = TrainState()
    back.load_state_dict(meta)
    assert back == st
