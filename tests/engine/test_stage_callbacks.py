"""run_stage with callbacks, in one process: the caller's and the process-wide ones (callbacks.register) see
the loop's events after the stage's own (the best-model export), and the stage's final evaluation."""
from __future__ import annotations

import json

from lakd.config import load_config
from lakd.engine import callbacks
from lakd.engine.stage import run_stage

from .helpers import LAUNCHER_VARS, tiny_args


class Recorder(callbacks.Callback):
    def __init__(self, best_export):
        self.best_export, self.events = best_export, []

    def on_step_end(self, trainer, step, loss, terms):
        self.events.append(("end", step, loss))

    def on_eval(self, trainer, step, result, final):
        self.events.append(("eval", step, final, result.metrics["image"]["miou"]))

    def on_best(self, trainer, step):
        # the stage's own callback (the best-model export) ran first
        self.events.append(("best", step, self.best_export is None or self.best_export.exists()))

    def on_checkpoint_saved(self, trainer, step, tag, is_best):
        self.events.append(("saved", step, tag, is_best))


def test_run_stage_runs_given_and_registered_callbacks(shards, tmp_path, monkeypatch):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    stage_dir = tmp_path / "runs" / "cb" / "baseline"
    cfg = load_config("synthetic", tiny_args(shards, tmp_path / "runs", "cb", **{
        "train.iters": 4, "eval.every": 2, "checkpoint.every": 4}), stage="baseline")
    mine, everywhere = Recorder(stage_dir / "baseline-best.safetensors"), Recorder(None)
    callbacks.register(everywhere)
    try:
        result = run_stage(cfg, [mine])
    finally:
        callbacks.unregister(everywhere)
    assert callbacks.registered() == []
    final = result["eval"]["image"]["miou"]
    assert [e[0] for e in mine.events] == ["end", "end", "eval", "best", "saved", "end", "end", "saved", "eval"]
    assert mine.events[3] == ("best", 2, True) and mine.events[4] == ("saved", 2, "step_00000002", True)
    assert mine.events[-1] == ("eval", 4, True, final)
    logged = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e[2] for e in mine.events if e[0] == "end"] == [r["loss"] for r in logged if "loss" in r]
    assert everywhere.events == mine.events
