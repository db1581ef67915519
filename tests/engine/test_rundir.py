"""lakd.rundir: every file of a stage folder named once, and its readers (result.json, config.yaml, metrics)."""
import json

import pytest

from lakd.rundir import ResultError, StageDir


def test_layout_from_parts_and_from_a_config(tmp_path):
    from lakd.config import load_config

    d = StageDir.at(tmp_path, "exp", "teacher")
    assert d.path == tmp_path / "exp" / "teacher" and d.stage == "teacher" and d.run_name == "exp"
    assert d.run_dir == tmp_path / "exp"
    assert (d.result.name, d.metrics.name, d.config.name) == ("result.json", "metrics.jsonl", "config.yaml")
    assert (d.console_log.name, d.lock.name, d.deepspeed_config.name) == ("console.log", ".lock",
                                                                           "deepspeed_config.json")
    assert d.checkpoints == d.path / "checkpoints" and d.latest_pointer == d.checkpoints / "latest"
    assert d.export == d.path / "teacher" and d.export_weights == d.path / "teacher.safetensors"
    assert d.best_export_weights == d.path / "teacher-best.safetensors"

    cfg = load_config("synthetic", [f"run.runs_dir={tmp_path}", "run.name=exp"], stage="student")
    assert StageDir.of(cfg).path == cfg.stage_dir == tmp_path / "exp" / "student"


def test_the_engine_and_its_parts_use_the_same_names(tmp_path):
    """The run-dir names the engine writes under are the ones this module reads (no second spelling)."""
    from lakd.config import load_config
    from lakd.engine.checkpoint import LATEST
    from lakd.engine.environment import result_path
    from lakd.engine.runlock import LOCK_NAME, RunLock
    from lakd.models.export import export_paths

    d = StageDir.at(tmp_path, "r", "baseline")
    assert d.latest_pointer.name == LATEST
    assert RunLock(d.path).path == d.lock and d.lock.name == LOCK_NAME
    assert export_paths(d.export)[0] == d.export_weights
    cfg = load_config("synthetic", [f"run.runs_dir={tmp_path}", "run.name=r"], stage="baseline")
    assert result_path(cfg) == d.result


def test_read_result_names_what_is_wrong(tmp_path):
    d = StageDir(tmp_path / "r" / "student")
    d.path.mkdir(parents=True)
    assert not d.finished
    with pytest.raises(ResultError, match=r"result.json: no result.json \(stage not finished\?\)"):
        d.read_result()
    full = json.dumps({"stage": "student", "eval": {"image": {"miou": 0.5}}})
    d.result.write_text(full[: len(full) // 2])  # a write cut short (no atomic rename)
    assert d.finished
    with pytest.raises(ValueError, match=r"not valid JSON .*cut short"):
        d.read_result()
    d.result.write_text("[1, 2]")
    with pytest.raises(ResultError, match="not a stage result"):
        d.read_result()
    d.result.write_text(full)
    assert d.read_result()["eval"]["image"]["miou"] == 0.5


def test_read_config_is_plain_data_and_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = StageDir(tmp_path / "s")
    assert d.read_config() == {}
    d.path.mkdir()
    d.config.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    assert d.read_config() == {} and not (tmp_path / "pwned").exists()
    d.config.write_text("data: {dataset: synthetic}\nrun: {seed: 3}\n")
    assert d.read_config()["run"]["seed"] == 3


def test_metrics_records_skip_a_line_cut_by_a_kill(tmp_path):
    d = StageDir(tmp_path / "s")
    assert list(d.metrics_records()) == []
    d.path.mkdir()
    d.metrics.write_text('{"step": 1, "loss": 2.0}\n[3]\n{"no_step": 1}\n{"step": 2, "eval": {}}\n{"step": 3, "lo')
    assert [r["step"] for r in d.metrics_records()] == [1, 2]


def test_latest_checkpoint_tag(tmp_path):
    d = StageDir(tmp_path / "s")
    assert d.latest_checkpoint_tag() is None
    d.checkpoints.mkdir(parents=True)
    d.latest_pointer.write_text("step_00000012\n")
    assert d.latest_checkpoint_tag() == "step_00000012"
