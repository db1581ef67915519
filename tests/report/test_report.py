"""The report, from fake run directories written here (the stage-output contract of ARCHITECTURE.md): roles,
the per-seed table with paired t intervals, the sentences it says in words, the files and figures it writes."""
import csv
import io
import json
import statistics
import struct

import numpy as np
import pytest
from matplotlib.axes import Axes
from fake_runs import K, model_init, write_stage
from scipy import stats

from lakd.report import build_blocks, find_results, markdown_table, role_of, write_report
from lakd.report.checks import majority_score
from lakd.report.figures import colorize
from lakd.report.stats import paired

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def _t_interval(diffs):
    """The 95% interval of the mean of paired differences, computed with scipy's own t.interval."""
    n = len(diffs)
    return stats.t.interval(0.95, n - 1, loc=np.mean(diffs), scale=stats.sem(diffs))


# ------------------------------------------------------------------------------------------------------ roles
@pytest.mark.parametrize("data, role", [
    ({"stage": "baseline"}, "baseline"),
    ({"stage": "baseline", "init": None}, "baseline"),
    ({"stage": "baseline", "init": {"scope": "backbone"}}, "baseline"),  # ImageNet weights: still a baseline
    ({"stage": "baseline", "init": {"scope": "model"}}, "finetune"),
    ({"stage": "student", "teacher": None, "init": {"scope": "model"}}, "finetune"),
    ({"stage": "student", "teacher": {"label_channels": 1}, "init": {"scope": "model"}}, "lad"),
    ({"stage": "student", "teacher": {"label_channels": 0}}, "kd"),
    ({"stage": "teacher", "eval": {"label": {"miou": 0.5}, "image": {"miou": 0.1}}}, "teacher_label"),
    ({"stage": "teacher", "eval": {"image": {"miou": 0.1}}}, "teacher_image"),
])
def test_role_of(data, role):
    assert role_of(data) == role


def test_roles_and_teacher_variants(sweep_like):
    root, _ = sweep_like
    results = find_results(root)
    by_name = {r.run_name: r for r in results}
    assert by_name["ft-s1"].roles == ("finetune",) and by_name["base-s1"].roles == ("baseline",)
    assert by_name["lad-s2"].roles == ("lad",) and by_name["kd-s0"].roles == ("kd",)
    assert by_name["img-teacher"].roles == ("teacher_image",)
    assert by_name["la-dual"].title() == "Teacher, label-assisted, dual path (paper)"
    assert by_name["la-single"].title() == "Teacher, label-assisted, single path"
    assert by_name["ft-s0"].title() == "Student, baseline fine-tuned (control)"
    assert [r.seed for r in results if r.has_role("lad")] == [0, 1, 2]


# ------------------------------------------------------------------------------------------------ statistics
def test_paired_interval_matches_scipy():
    a = {0: 0.46, 1: 0.47, 2: 0.49, 3: 0.40}
    b = {0: 0.40, 1: 0.42, 2: 0.41, 5: 0.30}  # seed 3 and 5 have no partner
    d = paired(a, b)
    diffs = [0.06, 0.05, 0.08]
    assert d.seeds == (0, 1, 2) and d.values == pytest.approx(diffs)
    assert d.unpaired == ("seed 3 unpaired", "seed 5 unpaired")
    assert d.interval == pytest.approx(_t_interval(diffs))
    assert d.mean == pytest.approx(np.mean(diffs))
    one = paired({0: 0.5}, {0: 0.4})
    assert one.n == 1 and one.interval is None
    same = paired({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5})  # equal differences: a zero-width interval
    assert same.interval == pytest.approx((0.1, 0.1))


def test_table_per_seed_differences_and_verdict_use_the_finetune_control(sweep_like):
    root, v = sweep_like
    (block,) = build_blocks(find_results(root))
    assert [s.role for s in block.students] == ["baseline", "finetune", "kd", "lad"]
    assert block.seeds == [0, 1, 2]
    lad = block.row("lad")
    assert lad.stat.mean == pytest.approx(statistics.fmean(v["lad"]))
    assert lad.stat.std == pytest.approx(statistics.stdev(v["lad"]))
    names = [c.name for c in block.comparisons]
    assert names == ["LAD − baseline", "KD − baseline", "LAD − fine-tuned baseline", "KD − fine-tuned baseline"]
    for c in block.comparisons:
        diffs = [x - y for x, y in zip(v[c.a], v[c.b])]
        assert c.diff.values == pytest.approx(diffs)
        assert c.diff.interval == pytest.approx(_t_interval(diffs))

    md = markdown_table([block])
    # the label-assisted teachers, the paper's first, beside the image-only teacher of their size (45.0)
    assert ("| Teacher, label-assisted, dual path (paper) | deeplabv3-resnet18-w0.125 | 80.0 | 30.0 | 45.0 | uses its "
            "label (+50.0 over zero label, +35.0 over the image-only teacher) |") in md
    assert md.index("dual path (paper) |") < md.index("single path |")
    # per-seed columns and mean ± std, in percent
    lad_line = "| Student, LAD (label-assisted teacher) | deeplabv3-resnet18-w0.125 | 46.0 | 47.0 | 49.0 | 47.3 ± 1.5 |"
    assert lad_line in md
    lo, hi = (100 * x for x in _t_interval([x - y for x, y in zip(v["lad"], v["finetune"])]))
    assert f"| LAD − fine-tuned baseline | 0, 1, 2 | +5.0, +4.0, +7.0 | +5.3 | [{lo:+.1f}, {hi:+.1f}] |" in md
    # the students started from the baseline, so the verdict compares with the fine-tuned control
    lad_verdict, kd_verdict = block.verdicts
    assert lad_verdict.startswith(f"LAD beats the fine-tuned baseline (control) by 5.3 [{lo:+.1f}, {hi:+.1f}]")
    klo, khi = (100 * x for x in _t_interval([x - y for x, y in zip(v["kd"], v["finetune"])]))
    assert klo < 0 < khi
    assert kd_verdict.startswith("No difference measurable between KD and the fine-tuned baseline (control)")
    assert "includes 0" in kd_verdict
    assert "All background" not in md and "scores **16.0** mIoU" in md  # 0.64 / 4 classes


def test_verdict_without_control_one_seed_and_worse(tmp_path):
    root = tmp_path / "runs"
    b = write_stage(root, "base-s0", "baseline", 0.40, seed=0)
    write_stage(root, "lad-s0", "student", 0.45, seed=0, init=model_init(b / "baseline.safetensors"),
                teacher={"export": "/elsewhere/teacher.safetensors", "label_channels": 1})
    (block,) = build_blocks(find_results(root))
    (v,) = block.verdicts
    assert "+5.0 mIoU points on one seed (seed 0); an interval needs >= 2 seeds" in v
    assert "Not a fair comparison" in v  # started from the baseline, no fine-tuned control
    assert "needs >= 2 seeds" in markdown_table([block])

    root2 = tmp_path / "runs2"
    for s, (base, kd) in enumerate([(0.50, 0.40), (0.52, 0.41), (0.51, 0.42)]):
        write_stage(root2, f"base-s{s}", "baseline", base, seed=s)
        write_stage(root2, f"kd-s{s}", "student", kd, seed=s, teacher={"export": "/x/t.safetensors",
                                                                       "label_channels": 0})
    (block,) = build_blocks(find_results(root2))
    (v,) = block.verdicts
    assert v.startswith("KD is worse than the baseline by 10.0 [")


# -------------------------------------------------------------------------------------------- said in words
def test_learned_nothing_and_label_use_sentences(tmp_path):
    root = tmp_path / "runs"
    # a teacher that ignores its label (within 2 points), one that uses it, one that learned nothing
    ign = write_stage(root, "la-ignores", "teacher", 0.400, label_miou=0.415, dual_path=True)
    uses = write_stage(root, "la-uses", "teacher", 0.30, label_miou=0.80, dual_path=False, collapsed=True)
    write_stage(root, "img-teacher", "teacher", 0.45)
    for s in range(2):
        write_stage(root, f"base-s{s}", "baseline", 0.08, seed=s, collapsed=True)
        write_stage(root, f"lad-s{s}", "student", 0.08, seed=s, collapsed=True,
                    teacher={"export": str(ign / "teacher.safetensors"), "label_channels": 1})
        write_stage(root, f"lad2-s{s}", "student", 0.30 + s, seed=s, collapsed=(s == 1), width=0.25,
                    teacher={"export": str(uses / "teacher.safetensors"), "label_channels": 1})
    names = {"toyset": ["background", "disk", "star", "ring"]}
    blocks = build_blocks(find_results(root), names)
    small, wide = blocks
    teachers = {t.title: t for t in small.teachers}
    assert teachers["Teacher, label-assisted, dual path (paper)"].remark.startswith(
        "ignores its label (with label 41.5 vs zero label 40.0)")
    assert small.row("baseline").remark == "learned nothing in every seed (predicts background everywhere)"
    assert small.verdicts == ["No verdict on LAD against the baseline: both learned nothing (predicts background "
                              "everywhere)."]
    wide_teacher = {t.title: t for t in wide.teachers}["Teacher, label-assisted, single path"]
    # +50 over zero label; the image-only model of its size (w0.125) is the image-only teacher (45.0)
    assert wide_teacher.remark == ("uses its label (+50.0 over zero label, +35.0 over the image-only teacher); "
                                   "with a zero label it predicts background everywhere")
    assert wide.row("lad").remark == "learned nothing in seed 1 (predicts background everywhere)"
    md = markdown_table(blocks)
    for needle in ("ignores its label", "uses its label (+50.0 over zero label", "learned nothing in every seed"):
        assert needle in md


def test_learned_nothing_single_run_and_majority_score():
    assert majority_score({"gt_fraction": [0.64, 0.12, 0.24, 0.0]}) == pytest.approx(0.64 / 3)
    assert majority_score({"miou": 0.3}) is None  # older results: unknown, not guessed


# ------------------------------------------------------------------------------------------------- the files
def _examples():
    rng = np.random.default_rng(0)
    label = rng.integers(0, K, (16, 24))
    label[0] = 255
    code = rng.normal(size=(16, 24)) * 3
    return [{"image": rng.integers(0, 255, (16, 24, 3), dtype=np.uint8), "label": label, "label_input": code,
             "preds": {"LA teacher, with label": label, "Teacher, image only": rng.integers(0, K, (16, 24)),
                       "Baseline": np.zeros((16, 24), dtype=int), "LAD": label}}] * 2


def test_write_report_files_and_units(sweep_like, tmp_path, monkeypatch):
    root, v = sweep_like
    captions, real_text = [], Axes.text  # the texts drawn on the figures
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: captions.append(s) or real_text(self, x, y, s,
                                                                                                      *a, **k))
    out = write_report(root, tmp_path / "report", title="Toy", intro="intro text", notes=["a note"],
                       examples={"dataset": "toyset", "class_names": list("abcd"), "examples": _examples(),
                                 "columns": ["LA teacher, with label", "Teacher, image only", "Baseline", "LAD"]})
    text = out.report.read_text()
    for needle in ("# Toy", "intro text", "a note", "Per-class IoU", "class 3", "figures/roles.png",
                   "figures/loss_curves.png", "figures/miou_curves.png", "figures/examples.png",
                   "LAD beats the fine-tuned baseline (control)", "LA teacher, dual path (paper), with label (IoU %)"):
        assert needle in text, needle
    # the all-background baseline prediction says so on both example images, no other prediction does
    assert sum(str(c).endswith(", all class 0") for c in captions) == 2, captions
    for png in (out.bars, out.curves, out.miou_curves, out.examples):
        w, h = _png_size(png)
        assert w > 300 and h > 200 and png.stat().st_size > 5000, png

    # one unit: percent everywhere, said in the column names
    rows = list(csv.DictReader(io.StringIO(out.csv.read_text())))
    lad = next(r for r in rows if r["section"] == "student" and r["row"].startswith("Student, LAD"))
    assert float(lad["mean_pct"]) == pytest.approx(100 * statistics.fmean(v["lad"]), abs=1e-3)
    assert [float(x) for x in lad["values_pct"].split(";")] == pytest.approx([100 * x for x in v["lad"]])
    diff = next(r for r in rows if r["row"] == "LAD − baseline")
    lo, hi = _t_interval([x - y for x, y in zip(v["lad"], v["baseline"])])
    assert float(diff["ci95_low_pct"]) == pytest.approx(100 * lo, abs=1e-3)
    assert float(diff["ci95_high_pct"]) == pytest.approx(100 * hi, abs=1e-3)
    summary = json.loads(out.summary.read_text())
    assert summary["unit"].startswith("percent")
    (block,) = summary["blocks"]
    assert block["all_background_miou_pct"] == pytest.approx(16.0)
    lad_row = next(s for s in block["students"] if s["role"] == "lad")
    assert lad_row["miou_pct"]["mean"] == pytest.approx(100 * statistics.fmean(v["lad"]))
    assert all(r["miou_pct"] is None or r["miou_pct"] > 1 for r in summary["runs"])


def test_write_report_without_eval_curves_or_class_shares(tmp_path):
    """Older results (no gt_fraction / terms) still give a report; no all-background line is invented."""
    root = tmp_path / "runs"
    d = write_stage(root, "base-s0", "baseline", 0.4, evals=0)
    data = json.loads((d / "result.json").read_text())
    for ev in data["eval"].values():
        ev.pop("gt_fraction"), ev.pop("pred_fraction")
    (d / "result.json").write_text(json.dumps(data))
    out = write_report(root, tmp_path / "report")
    assert "most frequent class" not in out.report.read_text().split("## Per-class")[0]
    assert out.miou_curves.stat().st_size > 0 and out.bars.stat().st_size > 0


def test_write_report_needs_results(tmp_path):
    with pytest.raises(ValueError, match="no finished stage"):
        write_report(tmp_path, tmp_path / "out")


def test_colorize_ignore_and_palette():
    rgb = colorize(np.array([[0, 1, 255, 7]]), [(0, 0, 0), (10, 20, 30)])
    assert rgb.tolist() == [[[0, 0, 0], [10, 20, 30], [255, 255, 255], [255, 0, 255]]]



def test_class_names_come_from_the_dataset_card():
    """The sweep's results.md (lakd.sweep.collect) and the report name classes as the card does."""
    from lakd.report.write import dataset_class_names

    class Run:
        def __init__(self, dataset, k):
            self.dataset, self.k = dataset, k

        def iou(self):
            return [0.0] * self.k

    names = dataset_class_names([Run("synthetic", 8), Run("synthetic", 10)])
    assert names["synthetic"][:3] == ["background", "red", "green"] and names["synthetic"][8:] == ["class 8", "class 9"]
