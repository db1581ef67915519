"""Write the markdown report of a set of finished runs: results table, per-class IoU, figures, run list."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lakd import __version__
from lakd.data.build import atomic_write_bytes
from lakd.report.figures import plot_example_grid, plot_training_curves
from lakd.report.results import StageResult, find_results
from lakd.report.table import (
    Row,
    build_rows,
    markdown_table,
    per_class,
    per_class_markdown,
    rows_csv,
    runs_table,
)

PER_CLASS_COLUMNS = (
    ("Baseline", "baseline", "image"),
    ("KD", "kd", "image"),
    ("LAD", "lad", "image"),
    ("Teacher (image only)", "teacher_image", "image"),
    ("LA teacher, with label", "teacher_label", "label"),
    ("LA teacher, zero label", "teacher_label", "image"),
)


@dataclass
class ReportFiles:
    report: Path
    csv: Path
    summary: Path
    curves: Path | None
    examples: Path | None


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path


def verdict(row: Row) -> str:
    """One sentence on LAD against the baseline for a table row, from the measured numbers."""
    lad, base, gain = row.cells["lad"], row.cells["baseline"], row.lad_gain
    if not lad.n or not base.n:
        return f"{row.dataset} / {row.student}: LAD or baseline missing, no comparison."
    spread = f" ± {100 * gain.std:.1f}" if gain.n > 1 else ""
    diff = f"{100 * gain.mean:+.1f}{spread} mIoU points"
    if gain.n > 1:
        wins = sum(v > 0 for v in gain.values)
        diff += f" (LAD ahead in {wins} of {gain.n} paired seeds)"
    if gain.mean > 0 and (gain.n < 2 or gain.mean > gain.std):
        word = "LAD beats the baseline"
    elif gain.mean > 0:
        word = "LAD is ahead of the baseline, but within the seed spread"
    else:
        word = "LAD does **not** beat the baseline"
    kd = row.cells["kd"]
    kd_txt = "" if not kd.n else f"; KD − baseline {100 * (kd.mean - base.mean):+.1f}"
    return f"{row.dataset} / {row.student}: {word}: {diff}{kd_txt}."


def _card(dataset: str, num_classes: int):
    """(class names, palette, ignore index) from the dataset card; generic ones for unknown datasets."""
    from lakd.data.cards import get_card

    try:
        card = get_card(dataset)
        return list(card.class_names), [tuple(c) for c in card.palette], int(card.ignore_index)
    except (ValueError, KeyError):
        from matplotlib import colormaps

        cmap = colormaps["tab20"]
        pal = [tuple(int(255 * v) for v in cmap(i % 20)[:3]) for i in range(num_classes)]
        return [f"class {i}" for i in range(num_classes)], pal, 255


def write_report(results: str | Path | Sequence[StageResult], out_dir: str | Path, *,
                 examples: dict | None = None, title: str = "lakd results", intro: str = "",
                 notes: Sequence[str] = ()) -> ReportFiles:
    """Write `report.md`, `results.csv`, `summary.json` and `figures/*.png` under `out_dir`.

    `results`: a directory searched for `result.json` files, or already loaded `StageResult`s.
    `examples`: output of `lakd.report.examples.predict_examples` (`{"dataset", "columns", "examples"}`)
    for the example grid; None leaves the grid out. `intro`/`notes`: markdown put before the table /
    at the end (e.g. the command that produced the runs, its timings)."""
    if not isinstance(results, (list, tuple)):
        results = find_results(results)
    if not results:
        raise ValueError("write_report: no finished stage (result.json) to report")
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    rows = build_rows(list(results))

    curves = plot_training_curves(results, fig_dir / "training_curves.png")
    grid = None
    if examples and examples.get("examples"):
        names, palette, ignore = _card(examples["dataset"], len(examples.get("class_names") or []) or 1)
        grid = plot_example_grid(examples["examples"], examples["columns"], palette, names,
                                 fig_dir / "examples.png", ignore_index=ignore)

    md = [f"# {title}", "",
          f"Generated {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by lakd {__version__}.", ""]
    if intro:
        md += [intro.rstrip(), ""]
    md += ["## Results", "",
           "Validation mIoU (%), mean ± sample standard deviation over seeds (a single number: one run). "
           "*LA teacher* = the label-assisted teacher; *with label* feeds it the ground truth through the "
           "fixed class code used at distillation time, *zero label* an all-zero label channel. "
           "*LAD − baseline* pairs the runs by seed.", "",
           markdown_table(rows)]
    md += ["**Verdict (measured in this run):**", ""] + [f"- {verdict(r)}" for r in rows] + [""]

    for dataset in dict.fromkeys(r.dataset for r in results):
        mine = [r for r in results if r.dataset == dataset]
        k = max((len(r.iou() or []) for r in mine), default=0)
        names, _, _ = _card(dataset, k)
        names = (list(names) + [f"class {i}" for i in range(len(names), k)])[:k]
        table = per_class(mine, list(PER_CLASS_COLUMNS), k)
        if table:
            md += [f"## Per-class IoU: {dataset}", "", "IoU (%) per class, mean over seeds.", "",
                   per_class_markdown(table, names)]

    md += ["## Figures", "", "### Training curves", "", f"![training curves]({curves.relative_to(out_dir)})", ""]
    if grid is not None:
        md += ["### Examples", "",
               "Validation images; predictions coloured with the dataset palette, each captioned with its "
               "pixel accuracy on that image. " + examples.get("caption", ""), "",
               f"![example predictions]({grid.relative_to(out_dir)})", ""]
    md += ["## Runs", "", runs_table(list(results))]
    if notes:
        md += ["## Notes", ""] + [n.rstrip() + "\n" for n in notes]

    report = _write_text(out_dir / "report.md", "\n".join(md))
    csv_path = _write_text(out_dir / "results.csv", rows_csv(rows))
    summary = {
        "units": "mIoU values are fractions of 1 (report.md and results.csv show percent)",
        "rows": [r.as_dict() for r in rows],
        "runs": [{"roles": list(r.roles), "run_name": r.run_name, "seed": r.seed, "arch": r.arch, "dataset": r.dataset,
                  "stage_dir": str(r.stage_dir), "miou": r.miou(), "miou_label": r.miou("label"),
                  "steps": r.data.get("steps"), "seconds": r.data.get("seconds")} for r in results],
        "figures": {"training_curves": str(curves), "examples": None if grid is None else str(grid)},
    }
    summary_path = _write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return ReportFiles(report, csv_path, summary_path, curves, grid)
