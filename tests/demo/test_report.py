"""The report, from fixture run directories written here (the stage-output contract of ARCHITECTURE.md)."""
import json
import math
import struct

import numpy as np
import pytest

from lakd.report import build_rows, find_results, markdown_table, write_report
from lakd.report.figures import colorize

K = 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stage(root, run, stage, miou, *, seed, teacher=None, label_miou=None, in_channels=3, width=0.125):
    d = root / run / stage
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    iou = np.clip(miou + rng.normal(0, 0.05, K), 0, 1).tolist()
    ev = {"image": {"miou": miou, "iou": iou, "acc": 0.9, "macc": 0.8}}
    if label_miou is not None:
        ev["label"] = {"miou": label_miou, "iou": [label_miou] * K, "acc": 0.95, "macc": 0.9}
    res = {"stage": stage, "run_name": run, "dataset": "toyset",
           "model": {"name": "deeplabv3", "backbone": "resnet18", "num_classes": K, "in_channels": in_channels,
                     "width": width},
           "teacher": teacher, "steps": 40, "seconds": 12.5, "eval": ev}
    (d / "result.json").write_text(json.dumps(res))
    (d / "config.yaml").write_text(f"seed: {seed}\ntrain:\n  steps: 40\n")
    lines = [json.dumps({"step": s, "lr": 0.01, "loss": 2.0 / (1 + s / 10) + 0.01 * rng.random(), "terms": {},
                         "images_per_s": 10.0, "max_rss_mb": 500, "time": s}) for s in range(1, 41)]
    lines += [json.dumps({"step": s, "eval": {k: {"miou": miou * s / 40} for k in ev}}) for s in (20, 40)]
    lines.append('{"step": 41, "loss": ')  # a partial last line (killed mid-write) is skipped
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture
def runs(tmp_path):
    """Like the sweep: teachers trained once, students and baselines once per seed; the KD row's image-only
    teacher is a `baseline` stage of a wider model."""
    root = tmp_path / "runs"
    lt = _stage(root, "la-teacher", "teacher", 0.50, seed=0, label_miou=0.9, in_channels=4)
    it = _stage(root, "wide", "baseline", 0.55, seed=0, width=0.25)
    for seed in range(3):
        _stage(root, f"base-s{seed}", "baseline", 0.40 + 0.02 * seed, seed=seed)
        _stage(root, f"kd-s{seed}", "student", 0.42, seed=seed,
               teacher={"export": str(it / "baseline.safetensors"), "label_channels": 0})
        _stage(root, f"lad-s{seed}", "student", 0.45 + 0.02 * seed, seed=seed,
               teacher={"export": str(lt / "teacher.safetensors"), "label_channels": 1})
    return root


def test_roles_and_table(runs):
    results = find_results(runs)
    roles = {r.run_name: r.roles for r in results}
    assert roles["la-teacher"] == ("teacher_label",) and roles["wide"] == ("teacher_image",)
    assert roles["kd-s1"] == ("kd",) and roles["lad-s2"] == ("lad",) and roles["base-s0"] == ("baseline",)
    assert all(r.seed in (0, 1, 2) for r in results)
    (row,) = build_rows(results)  # the wide image-only teacher makes no row of its own
    assert row.student == "deeplabv3-resnet18-w0.125"
    assert row.cells["baseline"].n == 3
    assert math.isclose(row.cells["baseline"].mean, 0.42)
    assert math.isclose(row.cells["baseline"].std, 0.02)
    assert math.isclose(row.cells["teacher_label"].mean, 0.9) and row.cells["teacher_label"].n == 1
    assert math.isclose(row.cells["teacher_label_zero"].mean, 0.50)
    assert math.isclose(row.cells["teacher_image"].mean, 0.55)
    assert row.teacher_arch["teacher_image"] == "deeplabv3-resnet18-w0.25"
    assert math.isclose(row.lad_gain.mean, 0.05) and row.lad_gain.n == 3  # paired by seed
    md = markdown_table([row])
    assert "| toyset | deeplabv3-resnet18-w0.125 | 42.0 ± 2.0 | 42.0 ± 0.0 | 47.0 ± 2.0 | 55.0 | 90.0 | 50.0 |" in md
    assert "+5.0 ± 0.0 | 3 |" in md


def test_kd_teacher_that_is_also_a_baseline(tmp_path):
    """A KD teacher of the students' own architecture (the seed-0 baseline) counts in both places."""
    root = tmp_path / "runs"
    b0 = _stage(root, "base-s0", "baseline", 0.40, seed=0)
    _stage(root, "base-s1", "baseline", 0.44, seed=1)
    for seed in range(2):
        _stage(root, f"kd-s{seed}", "student", 0.43, seed=seed,
               teacher={"export": str(b0 / "baseline.safetensors"), "label_channels": 0})
    results = find_results(root)
    assert {r.run_name: r.roles for r in results}["base-s0"] == ("baseline", "teacher_image")
    (row,) = build_rows(results)
    assert row.cells["baseline"].n == 2 and math.isclose(row.cells["teacher_image"].mean, 0.40)
    assert row.cells["lad"].n == 0 and row.lad_gain.n == 0
    assert "| – | – |" in markdown_table([row])  # LAD and LAD - baseline missing


def test_write_report(runs, tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, K, (16, 24))
    label[0] = 255
    ex = [{"image": rng.integers(0, 255, (16, 24, 3), dtype=np.uint8), "label": label,
           "preds": {"LA teacher, with label": label, "Baseline": rng.integers(0, K, (16, 24)),
                     "LAD": label}}] * 2
    out = write_report(runs, tmp_path / "report", title="Toy",
                       examples={"dataset": "toyset", "class_names": list("abcd"),
                                 "columns": ["LA teacher, with label", "Baseline", "LAD"], "examples": ex})
    text = out.report.read_text()
    for needle in ("| toyset | deeplabv3-resnet18-w0.125 |", "Per-class IoU", "class 3", "training_curves.png",
                   "examples.png", "LAD beats the baseline"):
        assert needle in text
    for png in (out.curves, out.examples):
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC
        w, h = struct.unpack(">II", data[16:24])
        assert w > 200 and h > 200
    summary = json.loads(out.summary.read_text())
    assert 0 <= summary["rows"][0]["lad"]["mean"] <= 1
    assert out.csv.read_text().startswith("dataset,student,baseline_mean")


def test_write_report_needs_results(tmp_path):
    with pytest.raises(ValueError, match="no finished stage"):
        write_report(tmp_path, tmp_path / "out")


def test_colorize_ignore_and_palette():
    rgb = colorize(np.array([[0, 1, 255, 7]]), [(0, 0, 0), (10, 20, 30)])
    assert rgb.tolist() == [[[0, 0, 0], [10, 20, 30], [255, 255, 255], [255, 0, 255]]]
