"""The results table of a sweep, in the paper's form (lakd.report): rows dataset x student, columns baseline /
KD / LAD student mIoU, the image-only teacher and the label-assisted teacher with and without its labels.

Only the runs the sweep planned are read, each with the role(s) the plan gave it, so an image-only teacher
trained as a ``baseline`` stage lands in the teacher column (and in its baseline row when it is one).
"""
from __future__ import annotations

import json
from pathlib import Path

from lakd.rundir import StageDir
from lakd.sweep.state import write_text_atomic

def planned_results(plan_summary: dict) -> tuple[list, list[str]]:
    """(StageResult of every finished planned stage, run dirs still missing a result)."""
    from lakd.report.results import load_result

    found, missing = [], []
    for job in plan_summary["jobs"]:
        if job["kind"] != "stage":
            continue
        stage_dir = StageDir(Path(job["run_dir"]))
        if not stage_dir.finished:
            missing.append(str(stage_dir))
            continue
        r = load_result(stage_dir)
        r.roles = tuple(job["roles"])
        r.role = r.roles[0]
        if r.seed is None:
            r.seed = job.get("seed")
        found.append(r)
    return found, missing


def write_results(plan_summary: dict, sweep_dir: Path) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``results.json`` into ``sweep_dir``; returns their paths."""
    from lakd.report.table import build_rows, markdown_table, rows_csv, runs_table
    from lakd.report.write import dataset_class_names

    sweep_dir = Path(sweep_dir)
    results, missing = planned_results(plan_summary)
    rows = build_rows(results, dataset_class_names(results))  # remarks name classes as the dataset card does
    md = [f"# Sweep {plan_summary['sweep']}: results", "",
          "mIoU in percent: every seed, mean ± std, and the paired differences against the baseline (and the "
          "fine-tuned control) with 95% t intervals over seeds; the teachers' own mIoU, the label-assisted ones "
          "with their label input and with a zero label channel. `lakd report` adds the figures.", "",
          markdown_table(rows), "## Runs", "", runs_table(results)]
    if missing:
        md += ["## Not finished", "", *[f"- `{m}`" for m in missing], ""]
    files = {
        "markdown": write_text_atomic(sweep_dir / "results.md", "\n".join(md)),
        "csv": write_text_atomic(sweep_dir / "results.csv", rows_csv(rows)),
        "json": write_text_atomic(sweep_dir / "results.json", json.dumps(
            {"sweep": plan_summary["sweep"], "rows": [r.as_dict() for r in rows], "missing": missing},
            indent=1, default=str)),
    }
    return files
