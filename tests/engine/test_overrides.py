"""One override parser: `lakd train key=value`, a sweep file's `overrides`, `lakd sweep --set` and `lakd demo --set`
read the same text to the same value (lakd.config.parse_override / dotted_overrides / nest_overrides)."""
from __future__ import annotations

import pytest

from lakd.config import (ConfigError, dotted_overrides, format_value, load_config, nest_overrides, parse_override,
                         parse_value)
from lakd.sweep import make_plan

# texts whose YAML reading is easy to get wrong: `1e-3` is a string in YAML 1.1, `1.0e-5` a float that JSON
# writes back as `1e-05` (a string again), `'01'` a quoted string, `yes` a boolean
TEXTS = ["1e-3", "1.0e-5", "0.5", "[1,2]", "null", "'01'", "01", "yes", "{a: [1, 2.5e+3]}", "x=y", "a b", "~/w"]

SWEEP = """\
name: same
datasets: {{synthetic: {{}}}}
models: {{m: {{name: fcn, backbone: plaincnn, width: 0.25}}}}
baselines: [m]
overrides:
  model.options.v: {text}
"""


def _model_options(cfg_dict: dict) -> dict:
    return cfg_dict["model"]["options"]


@pytest.mark.parametrize("text", TEXTS)
def test_sweep_file_and_lakd_train_read_an_override_alike(tmp_path, text):
    from_train = load_config("synthetic", [f"model.options.v={text}"], stage="baseline").model.options
    path = tmp_path / "same.yaml"
    path.write_text(SWEEP.format(text=text))
    (job,) = [j for j in make_plan(str(path), runs_dir=str(tmp_path / "runs")).ordered() if j.kind == "stage"]
    assert _model_options(job.config) == from_train  # the sweep's own `model` section keeps the override
    assert from_train["v"] == parse_value(text)
    # `lakd sweep --set` and the sweep file's mapping hold the same value
    assert parse_override(f"model.options.v={text}") == ("model.options.v", from_train["v"])


@pytest.mark.parametrize("text", TEXTS)
def test_a_value_written_for_a_command_line_reads_back_the_same(text):
    value = parse_value(text)
    assert parse_value(format_value(value)) == value


def test_typed_values_agree_between_the_sweep_and_lakd_train(tmp_path):
    path = tmp_path / "same.yaml"
    path.write_text(SWEEP.format(text="1") + "  optim.lr: 1e-3\n  data.crop_size: [32, 48]\n"
                    "  teacher.export: null\n  run.seed: 3\n")
    (job,) = [j for j in make_plan(str(path), runs_dir=str(tmp_path / "runs")).ordered() if j.kind == "stage"]
    cfg = load_config("synthetic", ["optim.lr=1e-3", "data.crop_size=[32, 48]", "teacher.export=null"])
    assert job.config["optim"]["lr"] == cfg.optim.lr == 1e-3
    assert job.config["data"]["crop_size"] == cfg.data.crop_size == [32, 48]
    assert job.config["teacher"]["export"] is None
    assert job.config["run"]["seed"] == 0  # the sweep sets each stage's seed itself (`seeds`), over overrides


def test_a_mapping_of_overrides_and_dotted_text_nest_alike():
    assert dotted_overrides({"train": {"iters": 4}, "model.options": {}, "a.b": {"c": 1}}) == {
        "train.iters": 4, "model.options": {}, "a.b.c": 1}
    assert nest_overrides({"train.iters": 4, "train.batch_size": 2}) == {"train": {"iters": 4, "batch_size": 2}}
    # a later mapping merges like a config layer: the earlier dotted key survives unless it sets it again
    assert nest_overrides([("model.width", 0.5), ("model", {"name": "fcn"})]) == {
        "model": {"width": 0.5, "name": "fcn"}}
    with pytest.raises(ConfigError, match="conflicts with an earlier override of 'a'"):
        nest_overrides([("a", 1), ("a.b", 2)])


@pytest.mark.parametrize("item", ["train.iters", "=3", "train..iters=3", ".iters=1"])
def test_malformed_overrides_are_refused_on_the_command_line(item, tmp_path, capsys):
    with pytest.raises(ConfigError, match="is not of the form section.key=value"):
        parse_override(item)
    from lakd.cli import main

    assert main(["demo", "--out", str(tmp_path / "demo"), "--set", item]) == 2
    assert "--set" in capsys.readouterr().err and not (tmp_path / "demo").exists()


@pytest.mark.parametrize("key", ["", "train..iters", ".iters"])
def test_malformed_override_keys_are_refused_in_a_sweep_file(key, tmp_path):
    with pytest.raises(ValueError, match=f"sweep file <mapping>: overrides: override '{key}: 1' is not of the form"):
        make_plan({"name": "bad", "datasets": {"synthetic": {}}, "models": {"m": {"name": "fcn"}},
                   "baselines": ["m"], "overrides": {key: 1}}, runs_dir=str(tmp_path))
