"""Typed config: presets, files with `base:`, dotted overrides, one clear error for bad keys/types."""
from __future__ import annotations

import pytest
import torch
import yaml

from lakd.cli import main
from lakd.config import (Config, ConfigError, batch_layout, config_from_yaml_text, list_presets, load_config,
                         parse_overrides)

PRESETS = ["ade20k", "camvid", "cityscapes", "coco_stuff10k", "coco_stuff164k", "synthetic", "voc"]


def test_every_dataset_has_a_preset_with_the_paper_settings():
    assert list_presets() == PRESETS
    for name in PRESETS:
        cfg = load_config(name)
        assert cfg.data.dataset == name
        o = cfg.optim
        assert (o.name, o.momentum, o.weight_decay, o.poly_power) == ("sgd", 0.9, 1e-4, 0.9)
        assert cfg.train.batch_size in (8, 16)
    assert load_config("cityscapes").data.crop_size == [512, 1024]
    assert load_config("camvid").data.crop_size == [360, 360]
    assert load_config("coco_stuff164k").train.iters == 80000
    assert load_config("ade20k").train.iters == 40000
    # method defaults = the official code (teacher aux 0.4, CWD T=4 weight 5; student aux 0.02, KD 3)
    cfg = load_config("voc")
    assert (cfg.teacher_loss.aux_weight, cfg.teacher_loss.consistency, cfg.teacher_loss.temperature,
            cfg.teacher_loss.consistency_weight) == (0.4, "cwd", 4.0, 5.0)
    assert (cfg.student_loss.aux_weight, cfg.student_loss.kd, cfg.student_loss.kd_weight) == (0.02, "cwd", 3.0)
    assert (cfg.noise.sigma, cfg.noise.fixed_sigma, cfg.noise.scale) == (0.03, 0.02, 1.735)  # 100 / 57.63


def test_overrides_are_typed(tmp_path):
    cfg = load_config("synthetic", ["train.iters=12", "data.crop_size=[48, 40]", "optim.lr=1e-3",
                                    "teacher.export=null", "train.precision=bf16", "model.options={dropout: 0.01}",
                                    "run.runs_dir=rel/runs"], stage="student", cwd=tmp_path)
    assert cfg.train.iters == 12 and cfg.data.crop_size == [48, 40] and cfg.optim.lr == 1e-3
    assert cfg.teacher.export is None and cfg.train.precision == "bf16" and cfg.stage == "student"
    assert cfg.model.options == {"dropout": 0.01}
    assert cfg.run.runs_dir == str(tmp_path / "rel" / "runs")  # absolute: Slurm jobs start elsewhere
    assert cfg.teacher_export() == tmp_path / "rel" / "runs" / "default" / "teacher" / "teacher.safetensors"
    # teacher.model is merged onto model
    cfg = load_config("synthetic", ["teacher.model.backbone=resnet50"])
    assert cfg.teacher.model.backbone == "resnet50" and cfg.teacher.model.width == cfg.model.width == 0.25
    assert cfg.model.backbone == "plaincnn"


@pytest.mark.parametrize("override, message", [
    ("train.iterz=5", "unknown config key 'train.iterz' (did you mean 'train.iters'?)"),
    ("nosuch.key=1", "unknown config key 'nosuch'"),
    ("train.iters=many", "config key 'train.iters': expected an integer, got 'many'"),
    ("train.iters=2.5", "config key 'train.iters': expected an integer"),
    ("optim.nesterov=1", "config key 'optim.nesterov': expected true or false"),
    ("train.precision=fp8", "config key 'train.precision': expected one of 'fp32', 'bf16'"),
    ("data.crop_size=64", "config key 'data.crop_size': expected a list of int"),
    ("data.crop_size=[64]", "config key 'data.crop_size': expected [height, width]"),
    ("train.zero_stage=3", "config key 'train.zero_stage': 3 is refused: with lakd's BatchNorm models"),
    ("train.zero_stage=4", "config key 'train.zero_stage': must be 0, 1 or 2"),
    ("train.iters", "not of the form section.key=value"),
])
def test_bad_input_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=None) as exc:
        load_config("synthetic", [override])
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cli_exits_2_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--stage", "teacher", "--config", "synthetic", f"run.runs_dir={runs}", "train.iterz=5"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown config key 'train.iterz'" in err and len(err.strip().splitlines()) == 1
    # a valid config whose shards are missing: also exit 2 before anything is written
    code = main(["train", "--stage", "teacher", "--config", "synthetic", f"run.runs_dir={runs}",
                 f"data.shards_dir={tmp_path / 'none'}"])
    assert code == 2 and "train shards not found" in capsys.readouterr().err
    if not torch.cuda.is_available():
        code = main(["train", "--stage", "teacher", "--config", "synthetic", f"run.runs_dir={runs}",
                     "train.sync_bn=on"])  # YAML: on = true
        assert code == 2 and "'train.sync_bn': true needs GPUs" in capsys.readouterr().err
    code = main(["train", "--stage", "student", "--config", "nosuchpreset"])
    assert code == 2 and "no config file or preset named 'nosuchpreset'" in capsys.readouterr().err
    assert not runs.exists()


def test_file_with_base_and_show_config(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("base: cityscapes\ntrain:\n  iters: 100\nmodel:\n  name: pspnet\n")
    cfg = load_config(str(path))
    assert cfg.data.crop_size == [512, 1024] and cfg.train.iters == 100 and cfg.model.name == "pspnet"
    assert main(["train", "--stage", "baseline", "--config", str(path), "--show-config", "optim.lr=0.01"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["stage"] == "baseline" and shown["optim"]["lr"] == 0.01 and shown["train"]["iters"] == 100
    # the resolved config saved with a run loads back to the same config (and hash)
    again = config_from_yaml_text(load_config(str(path)).to_yaml())
    assert again == cfg and again.hash() == cfg.hash()


def test_hash_ignores_paths_and_cadence_but_not_hyper_parameters():
    a = load_config("synthetic")
    assert a.hash() == load_config("synthetic", ["run.runs_dir=/x", "checkpoint.every=7", "log.every=3"]).hash()
    # trust and safety settings do not change what is trained: runs made before they existed keep their hash
    assert a.hash() == load_config("synthetic", ["data.allow_pipe=true", "data.max_pixels=1000"]).hash()
    assert a.hash() != load_config("synthetic", ["optim.lr=0.03"]).hash()
    assert a.hash() != load_config("synthetic", ["run.seed=1"]).hash()


def test_batch_layout_keeps_the_global_batch():
    cfg = load_config("cityscapes")
    assert batch_layout(cfg, 1) == (16, 1) and batch_layout(cfg, 8) == (2, 1)
    cfg = load_config("cityscapes", ["train.micro_batch_size=2"])
    assert batch_layout(cfg, 2) == (2, 4)
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        batch_layout(load_config("cityscapes"), 3)


def test_parse_overrides_nests():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}
    assert isinstance(Config(), Config)
