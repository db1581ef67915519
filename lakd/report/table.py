"""The results table in the paper's form, aggregated over seeds, as data, markdown and CSV.

Rows are dataset x student architecture; columns baseline / KD / LAD student mIoU, the image-only teacher's
mIoU, and the label-assisted teacher's mIoU with its label input (fixed class code) and with a zero label
channel. Each cell is the mean over the runs (seeds) that fill it, with the sample standard deviation and
the count. mIoU values stay fractions in [0, 1] in data and JSON (each stat says `"unit": "fraction"`);
markdown and CSV (`*_pct` columns) show them in percent.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from lakd.report.results import ROLE_TITLES, StageResult

# (column key, header, role of the runs it reads, which evaluation of result.json)
COLUMNS = (
    ("baseline", "Baseline", "baseline", "image"),
    ("kd", "KD", "kd", "image"),
    ("lad", "LAD", "lad", "image"),
    ("teacher_image", "Teacher (image only)", "teacher_image", "image"),
    ("teacher_label", "LA teacher, with label", "teacher_label", "label"),
    ("teacher_label_zero", "LA teacher, zero label", "teacher_label", "image"),
)


@dataclass(frozen=True)
class Stat:
    """Mean and spread of one cell over seeds."""

    values: tuple[float, ...]
    seeds: tuple[int | None, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value, NaN for none."""
        if not self.values:
            return math.nan
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    def as_dict(self) -> dict:
        return {"mean": _nan_none(self.mean), "std": _nan_none(self.std), "min": _nan_none(self.min),
                "max": _nan_none(self.max), "n": self.n, "values": list(self.values), "seeds": list(self.seeds),
                "unit": "fraction"}  # of 1: results.md and results.csv show percent

    def percent(self, digits: int = 1) -> str:
        """`71.3 ± 0.4` (percent), `71.3` for one run, `–` for none."""
        if not self.values:
            return "–"
        if self.n == 1:
            return f"{100 * self.mean:.{digits}f}"
        return f"{100 * self.mean:.{digits}f} ± {100 * self.std:.{digits}f}"


def _nan_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def _stat(results: list[StageResult], which: str) -> Stat:
    pairs = [(r.miou(which), r.seed) for r in results]
    pairs = [(v, s) for v, s in pairs if v is not None and not math.isnan(v)]
    return Stat(tuple(v for v, _ in pairs), tuple(s for _, s in pairs))


def _teachers_of(students: list[StageResult], teachers: list[StageResult]) -> list[StageResult]:
    """The teacher stages the students were distilled from (matched by export path); all given teachers
    when no export path matches (e.g. the run directory was moved)."""
    wanted = set()
    for s in students:
        export = (s.data.get("teacher") or {}).get("export")
        if export:
            wanted.add(Path(export).parent.resolve())
    matched = [t for t in teachers if t.stage_dir.resolve() in wanted]
    return matched or teachers


@dataclass
class Row:
    dataset: str
    student: str  # student architecture
    cells: dict[str, Stat]
    teacher_arch: dict[str, str]  # column key -> teacher architecture(s) behind it
    lad_gain: Stat  # LAD - baseline, paired by seed where both have seeds, else difference of means

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "student": self.student, "teacher_arch": self.teacher_arch,
                **{k: v.as_dict() for k, v in self.cells.items()}, "lad_minus_baseline": self.lad_gain.as_dict()}


def _gain(lad: list[StageResult], base: list[StageResult]) -> Stat:
    by_seed_b = {r.seed: r.miou() for r in base if r.seed is not None and r.miou() is not None}
    paired = [(r.miou() - by_seed_b[r.seed], r.seed) for r in lad
              if r.seed in by_seed_b and r.miou() is not None]
    if paired and len(paired) == len(lad) == len(base):
        return Stat(tuple(v for v, _ in paired), tuple(s for _, s in paired))
    sl, sb = _stat(lad, "image"), _stat(base, "image")
    return Stat((sl.mean - sb.mean,)) if sl.n and sb.n else Stat(())


def build_rows(results: list[StageResult]) -> list[Row]:
    """One row per (dataset, student architecture), in first-seen order."""
    rows = []
    keys = list(dict.fromkeys((r.dataset, r.arch) for r in results
                              if any(r.has_role(x) for x in ("baseline", "kd", "lad"))))
    for dataset, arch in keys:
        mine = [r for r in results if r.dataset == dataset and r.arch == arch]
        by_role = {role: [r for r in mine if r.has_role(role)] for role in ("baseline", "kd", "lad")}
        teachers = {
            "teacher_label": _teachers_of(by_role["lad"], [r for r in results if r.dataset == dataset
                                                           and r.has_role("teacher_label")]),
            "teacher_image": _teachers_of(by_role["kd"], [r for r in results if r.dataset == dataset
                                                          and r.has_role("teacher_image")]),
        }
        cells, teacher_arch = {}, {}
        for key, _, role, which in COLUMNS:
            runs = by_role.get(role) if role in by_role else teachers[role]
            cells[key] = _stat(runs, which)
            if role in teachers and runs:
                teacher_arch[key] = ", ".join(dict.fromkeys(t.arch for t in runs))
        rows.append(Row(dataset, arch, cells, teacher_arch, _gain(by_role["lad"], by_role["baseline"])))
    return rows


def markdown_table(rows: list[Row]) -> str:
    """The paper-style table: mIoU in percent, `mean ± std` over seeds."""
    head = ["Dataset", "Student"] + [h for _, h, _, _ in COLUMNS] + ["LAD − baseline", "Student seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for row in rows:
        n = max((row.cells[k].n for k in ("baseline", "kd", "lad")), default=0)
        gain = row.lad_gain
        gain_txt = "–" if not gain.n else (f"{100 * gain.mean:+.1f}" if gain.n == 1
                                           else f"{100 * gain.mean:+.1f} ± {100 * gain.std:.1f}")
        cells = [row.cells[k].percent() for k, _, _, _ in COLUMNS]
        lines.append("| " + " | ".join([row.dataset, row.student] + cells + [gain_txt, str(n)]) + " |")
    return "\n".join(lines) + "\n"


def runs_table(results: list[StageResult]) -> str:
    """Every run on its own line: where it lives, its seed, steps, time and mIoU (percent)."""
    lines = ["| Role | Model | Seed | mIoU (image) | mIoU (with label) | Steps | Time (s) | Run directory |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lab = r.miou("label")
        lines.append(
            f"| {'; '.join(ROLE_TITLES[x] for x in r.roles)} | {r.arch} | {'–' if r.seed is None else r.seed} | "
            f"{_pct(r.miou())} | {'–' if lab is None else _pct(lab)} | {r.data.get('steps', '–')} | "
            f"{_num(r.data.get('seconds'))} | `{r.stage_dir}` |")
    return "\n".join(lines) + "\n"


def per_class(results: list[StageResult], roles: list[tuple[str, str, str]], num_classes: int
              ) -> dict[str, list[float | None]]:
    """Mean IoU per class over the runs of each (column title, role, which evaluation)."""
    out = {}
    for title, role, which in roles:
        ious = [r.iou(which) for r in results if r.has_role(role)]
        ious = [i for i in ious if i is not None]
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
    lines = ["| Class | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    for c, name in enumerate(class_names):
        cells = [("–" if table[t][c] is None else _pct(table[t][c])) for t in titles]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_csv(rows: list[Row]) -> str:
    """One line per table row; mean/std/n per column, mIoU in percent as in results.md (`_pct` in the name)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["dataset", "student"]
    for key, _, _, _ in COLUMNS:
        header += [f"{key}_mean_pct", f"{key}_std_pct", f"{key}_n"]
    header += ["lad_minus_baseline_mean_pct", "lad_minus_baseline_std_pct"]
    w.writerow(header)
    for row in rows:
        line = [row.dataset, row.student]
        for key, _, _, _ in COLUMNS:
            c = row.cells[key]
            line += [_csv_num(100 * c.mean), _csv_num(100 * c.std), c.n]
        line += [_csv_num(100 * row.lad_gain.mean), _csv_num(100 * row.lad_gain.std)]
        w.writerow(line)
    return buf.getvalue()


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _num(x) -> str:
    return "–" if x is None else f"{float(x):.0f}"


def _csv_num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6f}"
