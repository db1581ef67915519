"""Every config check sits next to its field (lakd.config's pydantic sections): one bad value per section, the
names checked against the registries that build them, and values that must come out of validation unchanged."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lakd.cli import main
from lakd.config import ConfigError, load_config, validate
from lakd.data.cards import NAMES, use_card
from lakd.evaluation.inference import MODES
from lakd.method.objectives import CONSISTENCY_KINDS, KD_KINDS
from lakd.models import COMBINATIONS
from lakd.optim import IMPLS, OPTIMIZERS


def _refused(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config("synthetic", overrides)
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("override, message", [
    ("stage=distill", "config key 'stage': expected one of 'teacher', 'student' or 'baseline', got 'distill'"),
    ("run.name=..", "config key 'run.name': must be a non-empty folder name"),
    ("run.seed=one", "config key 'run.seed': expected an integer, got 'one'"),
    ("data.num_workers=-1", "config key 'data.num_workers': must be >= 0, got -1"),
    ("data.scale_range=[2.0, 1.0]", "config key 'data.scale_range': expected [low, high] with 0 < low <= high"),
    ("data.scale_range=[0, 1.0]", "config key 'data.scale_range[0]': must be > 0, got 0"),
    ("data.std=[1, 0, 1]", "config key 'data.std[1]': must be > 0"),
    ("data.mean=[1, 2]", "config key 'data.mean': expected 3 values (RGB)"),
    ("data.max_pixels=0", "config key 'data.max_pixels': must be >= 1, got 0"),
    ("data.allow_pipe=yes please", "config key 'data.allow_pipe': expected true or false"),
    ("model.width=0", "config key 'model.width': must be > 0, got 0"),
    ("model.options=[1]", "config key 'model.options': expected a mapping, got [1]"),
    ("teacher.model.width=-1", "config key 'teacher.model.width': must be > 0, got -1"),
    ("teacher.export=7", "config key 'teacher.export': expected a string, got 7"),
    ("noise.code_dim=0", "config key 'noise.code_dim': must be >= 1, got 0"),
    ("noise.sigma=-0.1", "config key 'noise.sigma': must be >= 0, got -0.1"),
    ("teacher_loss.label_dropout=1.5", "config key 'teacher_loss.label_dropout': must be <= 1, got 1.5"),
    ("teacher_loss.temperature=0", "config key 'teacher_loss.temperature': must be > 0, got 0"),
    ("student_loss.kd_weight=-3", "config key 'student_loss.kd_weight': must be >= 0, got -3"),
    ("student_loss.teacher_label_mode=random", "config key 'student_loss.teacher_label_mode': expected one of"),
    ("optim.momentum=1", "config key 'optim.momentum': must be < 1, got 1"),
    ("optim.min_lr=5", "config key 'optim.min_lr': must be in [0, optim.lr]"),
    ("optim.betas=[0.9]", "config key 'optim.betas': expected two values in [0, 1)"),
    ("optim.lr=.inf", "config key 'optim.lr': expected a finite number, got inf"),
    ("train.micro_batch_size=100", "config key 'train.micro_batch_size': must be in [1, train.batch_size]"),
    ("train.sync_bn=sometimes", "config key 'train.sync_bn': expected 'auto' or true or false, got 'sometimes'"),
    ("train.grad_clip=-1", "config key 'train.grad_clip': must be >= 0"),
    ("eval.scales=[]", "config key 'eval.scales': expected at least one scale"),
    ("eval.stride=[0, 4]", "config key 'eval.stride': expected [height, width] > 0"),
    ("eval.max_images=0", "config key 'eval.max_images': must be >= 1, got 0"),
    ("checkpoint.keep_last=0", "config key 'checkpoint.keep_last': must be >= 1, got 0"),
    ("log.preview_images=-1", "config key 'log.preview_images': must be >= 0, got -1"),
    ("dist.timeout_s=5", "config key 'dist.timeout_s': must be >= 10, got 5"),
    ("dist.backend=mpi", "config key 'dist.backend': expected one of 'auto', 'gloo' or 'nccl', got 'mpi'"),
    ("model.options={1: 2}", "config key 'model.options': keys must be strings"),
    ("eval={every: 1, evry: 2}", "unknown config key 'eval.evry' (did you mean 'eval.every'?)"),
])
def test_each_section_checks_its_fields(override, message):
    assert message in _refused([override])


@pytest.mark.parametrize("overrides, message", [
    (["train.device=cpu", "dist.backend=nccl"], "config key 'dist.backend': nccl needs CUDA devices"),
    (["train.device=cpu", "optim.impl=apex"], "config key 'optim.impl': apex's fused optimizers need CUDA"),
    (["train.device=cpu", "train.sync_bn=true"], "config key 'train.sync_bn': true needs GPUs"),
    (["train.precision=fp16"], "config key 'train.precision': fp16 needs train.zero_stage 1 or 2"),
])
def test_contradicting_settings_are_refused_at_config_time(overrides, message):
    assert message in _refused(overrides)
    for ok in (["train.device=auto", "dist.backend=nccl", "optim.impl=apex", "train.sync_bn=true"],
               ["train.precision=fp16", "train.zero_stage=1"]):
        load_config("synthetic", ok)  # the same values without the contradiction are accepted here


@pytest.mark.parametrize("override, key, known", [
    ("model.name=unet", "model.name", list(COMBINATIONS)),
    ("model.backbone=stdc1", "model.backbone", list(COMBINATIONS["fcn"])),  # a backbone, but not for fcn
    ("teacher.model.backbone=resnet9", "teacher.model.backbone", list(COMBINATIONS["fcn"])),
    ("data.dataset=mnist", "data.dataset", list(NAMES)),
    ("teacher_loss.consistency=l2", "teacher_loss.consistency", list(CONSISTENCY_KINDS)),
    ("student_loss.kd=feature", "student_loss.kd", list(KD_KINDS)),
    ("optim.name=lion", "optim.name", list(OPTIMIZERS)),
    ("optim.impl=bitsandbytes", "optim.impl", list(IMPLS)),
    ("eval.mode=tta", "eval.mode", list(MODES)),
])
def test_component_names_are_checked_against_their_registries(override, key, known):
    bad = override.split("=")[1]
    text = _refused([override])
    assert text.startswith(f"config key '{key}': unknown '{bad}'") and f"(known: {', '.join(known)})" in text


def test_every_registered_name_is_accepted():
    for name, backbones in COMBINATIONS.items():
        for backbone in backbones:
            assert load_config("synthetic", [f"model.name={name}", f"model.backbone={backbone}"]).model.name == name
    for kind in CONSISTENCY_KINDS:
        load_config("synthetic", [f"teacher_loss.consistency={kind}"])
    for mode in MODES:
        load_config("synthetic", [f"eval.mode={mode}"])


def test_registry_errors_exit_2_before_anything_is_written(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--stage", "baseline", "--config", "synthetic", f"run.runs_dir={runs}",
                 "model.backbone=foo"])
    err = capsys.readouterr().err
    assert code == 2 and "config key 'model.backbone': unknown 'foo'" in err and len(err.strip().splitlines()) == 1
    assert not runs.exists()


def test_validation_keeps_the_values_and_the_hash():
    # values pass through validation unchanged (an int for a float field becomes that float, nothing else moves):
    # these are the hashes configs had before the checks moved into the sections; a run resumes only when its
    # config hash is unchanged, so runs made before must keep theirs
    assert load_config("synthetic", stage="teacher").hash() == "8b0d4677d52cebce"
    assert load_config("synthetic", stage="student").hash() == "d73a92dd3889fde7"
    cfg = load_config("synthetic", ["optim.momentum=0", "optim.lr=1e-3", "model.options={a: 1}"])
    assert cfg.optim.momentum == 0.0 and isinstance(cfg.optim.momentum, float) and cfg.optim.lr == 1e-3
    assert cfg.model.options == {"a": 1}


def test_relative_paths_are_taken_from_the_loading_directory(tmp_path, monkeypatch):
    (tmp_path / "card.yaml").write_text("name: kitchens\nclass_names: [floor, wall, table]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    try:  # the card is read while the config is validated: from cwd, not from the process's directory
        cfg = load_config("synthetic", ["data.dataset=folder", "data.card=card.yaml", "model.pretrained=w/x.pt",
                                        "model.width=0.5"], cwd=tmp_path)
    finally:
        use_card(None)
    assert cfg.data.card == str(tmp_path / "card.yaml") and cfg.run.runs_dir == str(tmp_path / "runs")
    assert cfg.model.pretrained == str(tmp_path / "w" / "x.pt")
    # a catalogue name stays a name
    assert load_config("synthetic", ["model.pretrained=resnet18-imagenet"]).model.pretrained == "resnet18-imagenet"


def test_validate_checks_a_config_changed_after_it_was_built():
    cfg = load_config("synthetic")
    validate(cfg)
    cfg.optim.lr = -1.0
    with pytest.raises(ConfigError, match=r"config key 'optim.lr': must be > 0, got -1.0"):
        validate(cfg)


def test_loading_a_config_and_planning_a_sweep_do_not_import_torch(tmp_path):
    # the registries' names live in lakd.components (torch-free): `--show-config`, sweep planning and
    # reports stay fast on a login node; the modules that build the components use the same tuples
    code = ("import sys; from lakd.config import load_config; from lakd.sweep import make_plan; "
            f"load_config('synthetic'); make_plan('tiny', runs_dir={str(tmp_path)!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'deepspeed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import lakd.components as names

    assert COMBINATIONS is names.COMBINATIONS and OPTIMIZERS is names.OPTIMIZERS and MODES is names.EVAL_MODES
    assert CONSISTENCY_KINDS is names.CONSISTENCY_KINDS and KD_KINDS is names.KD_KINDS and IMPLS is names.IMPLS
