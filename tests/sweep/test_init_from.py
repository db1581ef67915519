"""`init_from` in sweep files (the official LAD pipeline: teacher and students start from the trained baseline),
its fine-tuned control, and the demo sweep's plan. No training: plans only."""
from __future__ import annotations

import pytest
import yaml

from lakd.sweep import make_plan
from lakd.sweep.spec import resolve_source


def demo_raw(tmp_path, **top) -> dict:
    raw = yaml.safe_load(resolve_source("demo").read_text())
    raw["runs_dir"] = str(tmp_path / "runs")
    raw.update(top)
    return raw


def test_students_start_from_their_seeds_baseline_and_get_a_finetune_control(tmp_path):
    plan = make_plan(demo_raw(tmp_path, seeds=[0, 1]), executor="local")
    jobs = plan.jobs
    for seed in (0, 1):
        base = jobs[f"baseline/synthetic-plain-s{seed}"]
        for key in (f"student/synthetic-plain-lad-plain_la-s{seed}", f"student/synthetic-plain-kd-plain-s{seed}",
                    f"baseline/synthetic-plain-finetune-s{seed}"):
            job = jobs[key]
            assert job.config["model"]["pretrained"] == str(base.export_path()), key
            assert base.key in job.deps, key
            assert job.config["train"]["iters"] == 500  # the student stage's fine-tuning length, control too
        assert jobs[f"baseline/synthetic-plain-finetune-s{seed}"].roles == ["finetune"]
        assert base.config["model"]["pretrained"] is None  # the baseline itself trains from scratch
    # teachers without init_from train from scratch; a `standalone` teacher is trained without students
    for name in ("plain_la", "plain_la_dual"):
        t = jobs[f"teacher/synthetic-{name}"]
        assert t.config["model"]["pretrained"] is None and t.config["train"]["iters"] == 1500
    assert jobs["teacher/synthetic-plain_la_dual"].config["teacher_loss"]["dual_path"] is True
    assert jobs["teacher/synthetic-plain_la"].config["teacher_loss"]["dual_path"] is False
    # the image-only teacher of the same size is the seed-0 baseline itself (one job, two roles)
    assert jobs["baseline/synthetic-plain-s0"].roles == ["teacher_image", "baseline"]
    # dependencies come before their dependants in the order the executors use
    order = [j.key for j in plan.ordered()]
    for j in plan.ordered():
        assert all(order.index(d) < order.index(j.key) for d in j.deps), j.key


def test_teacher_init_from_baseline_adds_the_baseline_it_needs(tmp_path):
    raw = demo_raw(tmp_path, seeds=[3], teacher_seed=7, baselines=[])
    raw["teachers"]["plain_la"]["init_from"] = "baseline"
    plan = make_plan(raw, executor="local")
    teacher = plan.jobs["teacher/synthetic-plain_la"]
    base = plan.jobs["baseline/synthetic-plain-s7"]  # at the teacher seed, although not a listed baseline
    assert teacher.config["model"]["pretrained"] == str(base.export_path())
    assert base.key in teacher.deps
    assert plan.jobs["teacher/synthetic-plain_la_dual"].config["model"]["pretrained"] is None


def test_pairs_without_init_from_have_no_control(tmp_path):
    raw = demo_raw(tmp_path, seeds=[0])
    for p in raw["pairs"]:
        p.pop("init_from")
    plan = make_plan(raw, executor="local")
    assert not [k for k in plan.jobs if "finetune" in k]
    assert plan.jobs["student/synthetic-plain-lad-plain_la-s0"].config["model"]["pretrained"] is None


@pytest.mark.parametrize("where", ["teachers", "pairs"])
def test_unknown_init_from_names_the_key(tmp_path, where):
    raw = demo_raw(tmp_path)
    if where == "teachers":
        raw["teachers"]["plain_la"]["init_from"] = "teacher"
        at = "teachers.plain_la.init_from"
    else:
        raw["pairs"][0]["init_from"] = "teacher"
        at = "pairs[0].init_from"
    with pytest.raises(ValueError, match=rf"{at.replace('[', '.').replace(']', '.')}.*unknown stage 'teacher'"):
        make_plan(raw, executor="local")


def test_unpaired_teachers_train_only_when_standalone(tmp_path):
    raw = demo_raw(tmp_path, seeds=[0])
    raw["teachers"]["plain_la_dual"]["standalone"] = False
    assert "teacher/synthetic-plain_la_dual" not in make_plan(raw, executor="local").jobs


def test_a_folder_named_like_a_shipped_sweep_does_not_hide_it(tmp_path, monkeypatch):
    from lakd.sweep.spec import SWEEPS_DIR, resolve_source

    (tmp_path / "demo").mkdir()  # e.g. `lakd demo --out demo`
    monkeypatch.chdir(tmp_path)
    assert resolve_source("demo") == SWEEPS_DIR / "demo.yaml"
    with pytest.raises(ValueError, match="sweep file not found: demo/"):
        resolve_source("demo/")
