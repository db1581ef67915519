"""The results table, aggregated over seeds, as data, markdown and CSV. Every number is in percent (mIoU points).

One *block* per dataset x student architecture:

- students (baseline, fine-tuned baseline, KD, LAD): the mIoU of every seed, mean ± sample std;
- teachers the block's students were distilled from: mIoU with the label input (fixed class code) and with a
  zero label channel, compared with the image-only model of the same size ("ignores its label" / "uses its
  label (+X over zero label, +Y over the image-only teacher)");
- paired differences LAD − baseline and KD − baseline (and − the fine-tuned control when it was run): mean
  and 95% Student t interval over seeds (lakd.report.stats), and a verdict sentence from those numbers.

A model that predicts one class everywhere is said to have "learned nothing" (lakd.report.checks).
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lakd.report.checks import class_name, collapsed_class, learned_nothing, majority_score
from lakd.report.results import ROLE_TITLES, StageResult
from lakd.report.stats import PairedDiff, SeedValues, paired

STUDENTS = ("baseline", "finetune", "kd", "lad")
METHOD_NAMES = {"lad": "LAD", "kd": "KD", "baseline": "the baseline", "finetune": "the fine-tuned baseline (control)"}
SHORT = {"lad": "LAD", "kd": "KD", "baseline": "baseline", "finetune": "fine-tuned baseline"}
# a label-assisted teacher whose with-label and zero-label scores are this close (mIoU points) ignores its label
IGNORES_LABEL_POINTS = 2.0


@dataclass(frozen=True)
class Stat(SeedValues):
    """Scores of one table cell over seeds (fractions inside; percent outside)."""

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value, NaN for none."""
        if not self.values:
            return math.nan
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def as_dict(self) -> dict:
        """Percent."""
        return {"mean": _pct_num(self.mean), "std": _pct_num(self.std), "n": self.n,
                "values": [_pct_num(v) for v in self.values], "seeds": list(self.seeds)}

    def percent(self, digits: int = 1) -> str:
        """`71.3 ± 0.4`, `71.3` for one run, `–` for none."""
        if not self.values:
            return "–"
        if self.n == 1:
            return f"{100 * self.mean:.{digits}f}"
        return f"{100 * self.mean:.{digits}f} ± {100 * self.std:.{digits}f}"


def _stat(runs: Sequence[StageResult], which: str = "image") -> Stat:
    pairs = [(r.miou(which), r.seed) for r in runs]
    pairs = [(v, s) for v, s in pairs if v is not None and not math.isnan(v)]
    return Stat(tuple(v for v, _ in pairs), tuple(s for _, s in pairs))


def _collapsed(runs: Sequence[StageResult], which: str, names) -> tuple[list[StageResult], str]:
    """(runs that predict one class everywhere, 'predicts <class> everywhere')."""
    bad = [r for r in runs if collapsed_class(r.metrics(which)) is not None]
    classes = dict.fromkeys(class_name(collapsed_class(r.metrics(which)), names) for r in bad)
    return bad, f"predicts {' / '.join(classes)} everywhere"


def _collapse_remark(runs: Sequence[StageResult], which: str, names: Sequence[str] | None) -> str:
    """'learned nothing (...)' when every run collapsed; naming the seeds when only some did."""
    bad, what = _collapsed(runs, which, names)
    if not bad:
        return ""
    if len(bad) == len(runs):
        return f"learned nothing ({what})" if len(runs) == 1 else f"learned nothing in every seed ({what})"
    return f"learned nothing in seed {', '.join(str(r.seed) for r in bad)} ({what})"


@dataclass
class StudentRow:
    role: str
    title: str
    arch: str
    runs: list[StageResult]
    stat: Stat
    remark: str

    def by_seed(self) -> dict[int | None, float]:
        return {s: v for v, s in zip(self.stat.values, self.stat.seeds)}

    def as_dict(self) -> dict:
        return {"role": self.role, "title": self.title, "model": self.arch, "miou_pct": self.stat.as_dict(),
                "remark": self.remark, "runs": [str(r.stage_dir) for r in self.runs]}


@dataclass
class TeacherRow:
    role: str  # teacher_label | teacher_image
    title: str
    arch: str
    runs: list[StageResult]
    with_label: Stat  # empty for an image-only teacher
    image: Stat  # zero label channel (label-assisted) or the image-only teacher's own score
    reference: Stat  # image-only model of the same size (label-assisted teachers only)
    reference_title: str
    remark: str

    @property
    def ignores_label(self) -> bool | None:
        if not self.with_label.n or not self.image.n:
            return None
        return abs(100 * (self.with_label.mean - self.image.mean)) < IGNORES_LABEL_POINTS

    def as_dict(self) -> dict:
        return {"role": self.role, "title": self.title, "model": self.arch,
                "with_label_miou_pct": self.with_label.as_dict(), "zero_label_or_image_miou_pct": self.image.as_dict(),
                "same_size_image_only_miou_pct": self.reference.as_dict(), "same_size_image_only": self.reference_title,
                "ignores_label": self.ignores_label, "remark": self.remark,
                "runs": [str(r.stage_dir) for r in self.runs]}


@dataclass
class Comparison:
    a: str  # role, e.g. lad
    b: str  # role, e.g. baseline
    diff: PairedDiff

    @property
    def name(self) -> str:
        return f"{SHORT[self.a]} − {SHORT[self.b]}"

    def as_dict(self) -> dict:
        return {"name": self.name, "a": self.a, "b": self.b, "difference_pct_points": self.diff.as_dict()}


@dataclass
class Block:
    """The table of one dataset x student architecture."""

    dataset: str
    student: str
    students: list[StudentRow]
    teachers: list[TeacherRow]
    comparisons: list[Comparison]
    verdicts: list[str]
    majority: float | None  # mIoU of predicting the most frequent class everywhere (fraction)
    seeds: list[int | None] = field(default_factory=list)

    def row(self, role: str) -> StudentRow | None:
        return next((s for s in self.students if s.role == role), None)

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "student": self.student, "unit": "percent",
                "all_background_miou_pct": _pct_num(self.majority), "seeds": self.seeds,
                "students": [s.as_dict() for s in self.students], "teachers": [t.as_dict() for t in self.teachers],
                "differences": [c.as_dict() for c in self.comparisons], "verdicts": self.verdicts}


# ------------------------------------------------------------------------------------------------- building
def _export_dirs(students: list[StageResult]) -> set[Path]:
    return {Path(e).parent.resolve() for s in students if (e := (s.data.get("teacher") or {}).get("export"))}


def _teachers_of(students: list[StageResult], teachers: list[StageResult], dataset_runs: list[StageResult]
                 ) -> list[StageResult]:
    """The teachers of a block: those its students were distilled from (matched by export path) and those no
    student of the dataset was distilled from (trained for comparison, e.g. a second teacher variant); all
    given teachers when no export path matches at all (e.g. the run directories were moved)."""
    mine, used = _export_dirs(students), _export_dirs(dataset_runs)
    if not any(t.stage_dir.resolve() in used for t in teachers):
        return teachers
    return [t for t in teachers if t.stage_dir.resolve() in mine or t.stage_dir.resolve() not in used]


def _same_size_reference(teacher: StageResult, pool: list[StageResult]) -> tuple[list[StageResult], str]:
    """The image-only model of the label-assisted teacher's architecture: an image-only teacher, else (for a
    teacher fine-tuned from a trained model) the fine-tuned control, else the baseline."""
    fine_tuned = teacher.init_scope == "model"
    order = ("teacher_image", "finetune", "baseline") if fine_tuned else ("teacher_image", "baseline")
    for role in order:
        runs = [r for r in pool if r.arch == teacher.arch and r.has_role(role)]
        if runs:
            return runs, ("the image-only teacher" if role == "teacher_image" else
                          f"the image-only model of the same size ({ROLE_TITLES[role]})")
    return [], ""


def _label_teacher_row(runs: list[StageResult], pool: list[StageResult], names) -> TeacherRow:
    t = runs[0]
    with_label, zero = _stat(runs, "label"), _stat(runs, "image")
    ref_runs, ref_title = _same_size_reference(t, pool)
    ref = _stat(ref_runs)
    remark = _collapse_remark(runs, "label", names)
    if not remark and with_label.n and zero.n:
        gap = 100 * (with_label.mean - zero.mean)
        if abs(gap) < IGNORES_LABEL_POINTS:
            remark = f"ignores its label (with label {with_label.percent()} vs zero label {zero.percent()})"
        else:
            remark = f"uses its label ({gap:+.1f} over zero label"
            remark += f", {100 * (with_label.mean - ref.mean):+.1f} over {ref_title})" if ref.n else ")"
        bad, what = _collapsed(runs, "image", names)
        if bad:
            remark += f"; with a zero label it {what}"
    return TeacherRow("teacher_label", t.title("teacher_label"), t.arch, runs, with_label, zero, ref, ref_title,
                      remark)


def _teacher_rows(students: list[StageResult], dataset_runs: list[StageResult], names) -> list[TeacherRow]:
    rows = []
    label_teachers = _teachers_of(students, [r for r in dataset_runs if r.has_role("teacher_label")],
                                  dataset_runs)
    # one row per variant (dual path / single path) and architecture
    variants: dict[tuple, list[StageResult]] = {}
    for t in label_teachers:
        variants.setdefault((t.title("teacher_label"), t.arch), []).append(t)
    for runs in sorted(variants.values(), key=lambda runs: runs[0].dual_path is not True):  # the paper's first
        rows.append(_label_teacher_row(runs, dataset_runs, names))
    image_teachers = _teachers_of(students, [r for r in dataset_runs if r.has_role("teacher_image")],
                                  dataset_runs)
    by_arch: dict[str, list[StageResult]] = {}
    for t in image_teachers:
        by_arch.setdefault(t.arch, []).append(t)
    for arch, runs in by_arch.items():
        rows.append(TeacherRow("teacher_image", ROLE_TITLES["teacher_image"], arch, runs, Stat(()), _stat(runs),
                               Stat(()), "", _collapse_remark(runs, "image", names)))
    return rows


def _fine_tuned(runs: list[StageResult]) -> bool:
    return any(r.init_scope == "model" for r in runs)


def _verdict(c: Comparison, rows: dict[str, StudentRow]) -> str:
    a, b, d = METHOD_NAMES[c.a], METHOD_NAMES[c.b], c.diff
    if all(rows[x].remark.startswith(("learned nothing (", "learned nothing in every seed")) for x in (c.a, c.b)):
        return f"No verdict on {a} against {b}: both learned nothing ({rows[c.a].remark.split('(', 1)[1]}."
    if not d.n:
        return f"{a} against {b}: no runs with the same seed to pair."
    mean = 100 * d.mean
    if d.n == 1:
        return (f"{a} − {b}: {mean:+.1f} mIoU points on one seed (seed {d.seeds[0]}); an interval needs >= 2 "
                f"seeds.")
    lo, hi = (100 * x for x in d.interval)
    span = f"{abs(mean):.1f} [{lo:+.1f}, {hi:+.1f}] mIoU points (mean, 95% interval over {d.n} seeds)"
    if lo > 0:
        return f"{a} beats {b} by {span}."
    if hi < 0:
        return f"{a} is worse than {b} by {span}."
    return (f"No difference measurable between {a} and {b}: {mean:+.1f} [{lo:+.1f}, {hi:+.1f}] mIoU points "
            f"(mean, 95% interval over {d.n} seeds); the interval includes 0.")


def _verdicts(comparisons: list[Comparison], rows: dict[str, StudentRow]) -> list[str]:
    """One sentence per method (LAD, KD), against its fair control: the fine-tuned baseline when the method's
    students were initialised from a trained baseline and the control was run, else the baseline."""
    out = []
    for method in ("lad", "kd"):
        if method not in rows:
            continue
        fine_tuned = _fine_tuned(rows[method].runs)
        ref = "finetune" if fine_tuned and "finetune" in rows else "baseline"
        c = next((c for c in comparisons if c.a == method and c.b == ref), None)
        if c is None:
            continue
        text = _verdict(c, rows)
        for role in (c.a, c.b):
            if rows[role].remark.startswith("learned nothing") and not text.startswith("No verdict"):
                text += f" {SHORT[role][0].upper() + SHORT[role][1:]} {rows[role].remark}."
        if fine_tuned and ref == "baseline":
            text += (f" Not a fair comparison: the {SHORT[method]} students started from a trained baseline and "
                     "no fine-tuned control was run.")
        out.append(text)
    return out


def build_blocks(results: list[StageResult], class_names: dict[str, Sequence[str]] | None = None) -> list[Block]:
    """One block per (dataset, student architecture), in first-seen order. `class_names`: dataset -> names
    (for the "predicts <class> everywhere" remarks)."""
    blocks = []
    keys = list(dict.fromkeys((r.dataset, r.arch) for r in results if any(r.has_role(x) for x in STUDENTS)))
    for dataset, arch in keys:
        names = (class_names or {}).get(dataset)
        dataset_runs = [r for r in results if r.dataset == dataset]
        mine = [r for r in dataset_runs if r.arch == arch]
        rows: dict[str, StudentRow] = {}
        for role in STUDENTS:
            runs = sorted((r for r in mine if r.has_role(role)), key=lambda r: (r.seed is None, r.seed or 0))
            if runs:
                rows[role] = StudentRow(role, ROLE_TITLES[role], arch, runs, _stat(runs),
                                        _collapse_remark(runs, "image", names))
        comparisons = []
        for ref in ("baseline", "finetune"):
            for method in ("lad", "kd"):
                if method in rows and ref in rows:
                    comparisons.append(Comparison(method, ref, paired(rows[method].by_seed(), rows[ref].by_seed())))
        students = [r for row in rows.values() for r in row.runs]
        majority = next((m for r in dataset_runs for w in ("image", "label")
                         if (m := majority_score(r.metrics(w))) is not None), None)
        seeds = sorted({s for row in rows.values() for s in row.stat.seeds}, key=lambda s: (s is None, s or 0))
        blocks.append(Block(dataset, arch, list(rows.values()), _teacher_rows(students, dataset_runs, names),
                            comparisons, _verdicts(comparisons, rows), majority, seeds))
    return blocks


# Names the sweep's collect step imports.
build_rows = build_blocks


# ------------------------------------------------------------------------------------------------ rendering
def _seed_header(s) -> str:
    return "no seed" if s is None else f"seed {s}"


def markdown_table(blocks: list[Block]) -> str:
    """Per block: the students (per seed, mean ± std), the teachers, the paired differences, the verdict."""
    out = []
    for b in blocks:
        out += [f"### {b.dataset} / student {b.student}", ""]
        if b.majority is not None:
            out += [f"Predicting the most frequent class everywhere (all background) scores "
                    f"**{100 * b.majority:.1f}** mIoU (%).", ""]
        head = ["Student", "Model"] + [f"{_seed_header(s)} (mIoU %)" for s in b.seeds] + ["mean ± std (mIoU %)",
                                                                                          "Remark"]
        out += ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(b.seeds) + 1) + "---|"]
        for row in b.students:
            vals = row.by_seed()
            cells = [_pct(vals.get(s)) for s in b.seeds]
            out.append("| " + " | ".join([row.title, row.arch, *cells, row.stat.percent(), row.remark]) + " |")
        out.append("")
        if b.teachers:
            out += ["| Teacher | Model | with label (mIoU %) | zero label / image only (mIoU %) | image-only model "
                    "of the same size (mIoU %) | Remark |", "|---|---|---:|---:|---:|---|"]
            for t in b.teachers:
                out.append(f"| {t.title} | {t.arch} | {t.with_label.percent()} | {t.image.percent()} | "
                           f"{t.reference.percent()} | {t.remark} |")
            out.append("")
        if b.comparisons:
            out += ["| Paired difference | Seeds | per seed (mIoU points) | mean (mIoU points) | 95% interval "
                    "(mIoU points) |", "|---|---|---:|---:|---:|"]
            for c in b.comparisons:
                d = c.diff
                per = ", ".join(f"{100 * v:+.1f}" for v in d.values) or "–"
                iv = d.interval
                iv_txt = (f"[{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else
                          ("needs >= 2 seeds" if d.n == 1 else "–"))
                mean = "–" if not d.n else f"{100 * d.mean:+.1f}"
                seeds = "; ".join([", ".join(str(s) for s in d.seeds) or "–", *d.unpaired])
                out.append(f"| {c.name} | {seeds} | {per} | {mean} | {iv_txt} |")
            out.append("")
        if b.verdicts:
            out += ["**Verdict (measured in this run):**", ""] + [f"- {v}" for v in b.verdicts] + [""]
    return "\n".join(out)


def rows_csv(blocks: list[Block]) -> str:
    """Long form, one line per table line; every score in percent (column names say so)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "student", "section", "row", "model", "input", "seeds", "values_pct", "mean_pct",
                "std_pct", "n", "ci95_low_pct", "ci95_high_pct", "remark"])
    for b in blocks:
        for row in b.students:
            s = row.stat
            w.writerow([b.dataset, b.student, "student", row.title, row.arch, "image",
                        ";".join(map(str, s.seeds)), ";".join(_csv_num(v) for v in s.values), _csv_num(s.mean),
                        _csv_num(s.std), s.n, "", "", row.remark])
        for t in b.teachers:
            for inp, s in (("with label", t.with_label), ("zero label" if t.role == "teacher_label" else "image",
                                                          t.image)):
                if s.n:
                    w.writerow([b.dataset, b.student, "teacher", t.title, t.arch, inp, ";".join(map(str, s.seeds)),
                                ";".join(_csv_num(v) for v in s.values), _csv_num(s.mean), _csv_num(s.std), s.n,
                                "", "", t.remark])
        for c in b.comparisons:
            d, iv = c.diff, c.diff.interval
            w.writerow([b.dataset, b.student, "difference", c.name, "", "image", ";".join(map(str, d.seeds)),
                        ";".join(_csv_num(v) for v in d.values), _csv_num(d.mean) if d.n else "", "", d.n,
                        _csv_num(iv[0]) if iv else "", _csv_num(iv[1]) if iv else "", ""])
        if b.majority is not None:
            w.writerow([b.dataset, b.student, "reference", "all background (most frequent class everywhere)", "",
                        "", "", "", _csv_num(b.majority), "", "", "", "", ""])
    return buf.getvalue()


def _init_text(r: StageResult) -> str:
    init = r.data.get("init")
    if not isinstance(init, dict):
        return "scratch"
    src = Path(str(init.get("from", "?")))
    where = f"{src.parent.parent.name}/{src.parent.name}" if src.suffix else f"{src.parent.name}/{src.name}"
    return f"from `{where}`" if init.get("scope") == "model" else f"{init.get('scope', '?')} from `{src.name}`"


def runs_table(results: list[StageResult], class_names: dict[str, Sequence[str]] | None = None) -> str:
    """Every run on its own line: where it lives, its seed, start, steps, time and mIoU (percent)."""
    lines = ["| Role | Model | Seed | Start | mIoU image / zero label (%) | mIoU with label (%) | Steps | Time (s) | "
             "Remark | Run directory |", "|---|---|---:|---|---:|---:|---:|---:|---|---|"]
    for r in results:
        names = (class_names or {}).get(r.dataset)
        lab = r.miou("label")
        remark = learned_nothing(r.metrics("label" if lab is not None else "image"), names) or ""
        lines.append(
            f"| {'; '.join(r.title(x) for x in r.roles)} | {r.arch} | {'–' if r.seed is None else r.seed} | "
            f"{_init_text(r)} | {_pct(r.miou())} | {'–' if lab is None else _pct(lab)} | "
            f"{r.data.get('steps', '–')} | {_num(r.data.get('seconds'))} | {remark} | `{r.stage_dir}` |")
    return "\n".join(lines) + "\n"


def per_class(columns: list[tuple[str, list[StageResult], str]], num_classes: int) -> dict[str, list[float | None]]:
    """Mean IoU per class over the runs of each (column title, runs, which evaluation)."""
    out = {}
    for title, runs, which in columns:
        ious = [i for r in runs if (i := r.iou(which)) is not None]
        if not ious:
            continue
        col = []
        for c in range(num_classes):
            vals = [i[c] for i in ious if c < len(i) and i[c] is not None and not math.isnan(i[c])]
            col.append(statistics.fmean(vals) if vals else None)
        out[title] = col
    return out


def per_class_markdown(table: dict[str, list[float | None]], class_names: list[str]) -> str:
    titles = list(table)
    lines = ["| Class | " + " | ".join(f"{t} (IoU %)" for t in titles) + " |", "|---|" + "---:|" * len(titles)]
    for c, name in enumerate(class_names):
        cells = [("–" if table[t][c] is None else _pct(table[t][c])) for t in titles]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _pct_num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(100 * x, 6)


def _num(x) -> str:
    return "–" if x is None else f"{float(x):.0f}"


def _csv_num(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.4f}"
