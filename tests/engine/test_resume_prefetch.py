"""Exact resume with loader worker processes, whose batches the trainer takes through lakd.data.prefetch:
a run preempted at step 3 and resumed ends bitwise equal to an uninterrupted one (the prefetched batch 4 is
neither lost nor used twice)."""
from __future__ import annotations

import json

import pytest

from .helpers import assert_same_weights, launch, tiny_args
from lakd.engine.preemption import EXIT_REQUEUE

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_preempt_and_resume_with_loader_workers_is_bitwise_exact(shards, tmp_path):
    def args(name):
        return ["--stage", "teacher", "--config", "synthetic",
                *tiny_args(shards, tmp_path, name, **{"data.num_workers": 2})]

    ref = launch(1, args("ref"), single=True)
    assert ref.codes == [0], ref.text
    first = launch(1, args("pre"), hook="signal:0:3", single=True)
    assert first.codes == [EXIT_REQUEUE], first.text
    second = launch(1, args("pre"), single=True)
    assert second.codes == [0], second.text
    assert "resuming at step 3" in second.outputs[0]
    assert_same_weights(tmp_path / "ref" / "teacher" / "teacher.safetensors",
                        tmp_path / "pre" / "teacher" / "teacher.safetensors")
    a, b = (json.loads((tmp_path / n / "teacher" / "result.json").read_text()) for n in ("ref", "pre"))
    assert a["eval"] == b["eval"]
