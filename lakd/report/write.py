"""Write the report of a set of finished runs: results table (percent), per-class IoU, figures, run list."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lakd import __version__
from lakd.io import atomic_write_bytes
from lakd.report.figures import plot_example_grid, plot_loss_curves, plot_miou_curves, plot_role_bars
from lakd.report.results import StageResult, find_results
from lakd.report.table import Block, build_blocks, markdown_table, per_class, per_class_markdown, rows_csv, runs_table


@dataclass
class ReportFiles:
    report: Path
    csv: Path
    summary: Path
    curves: Path | None  # loss curves
    examples: Path | None
    miou_curves: Path | None = None
    bars: Path | None = None


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path


def verdict(block: Block) -> str:
    """The verdict sentences of a results block, from the measured numbers."""
    return " ".join(block.verdicts) or f"{block.dataset} / {block.student}: no distilled student to compare."


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


def _per_class_columns(results: list[StageResult]) -> list[tuple[str, list[StageResult], str]]:
    cols = []
    for role, title in (("baseline", "Baseline"), ("finetune", "Fine-tuned baseline"), ("kd", "KD"),
                        ("lad", "LAD"), ("teacher_image", "Teacher (image only)")):
        cols.append((title, [r for r in results if r.has_role(role)], "image"))
    variants: dict[str, list[StageResult]] = {}
    for r in results:
        if r.has_role("teacher_label"):
            variants.setdefault(r.title("teacher_label").replace("Teacher, label-assisted", "LA teacher"), []).append(r)
    for title, runs in variants.items():
        cols += [(f"{title}, with label", runs, "label"), (f"{title}, zero label", runs, "image")]
    return cols


def dataset_class_names(results) -> dict[str, list[str]]:
    """dataset -> class names from its card (``class <i>`` past the card's end), for the table's remarks."""
    names = {}
    for dataset in dict.fromkeys(r.dataset for r in results):
        k = max((len(r.iou() or []) for r in results if r.dataset == dataset), default=0)
        card_names, _, _ = _card(dataset, k)
        names[dataset] = (list(card_names) + [f"class {i}" for i in range(len(card_names), k)])[:max(k, 1)]
    return names


def write_report(results: str | Path | Sequence[StageResult], out_dir: str | Path, *,
                 examples: dict | None = None, title: str = "lakd results", intro: str = "",
                 notes: Sequence[str] = ()) -> ReportFiles:
    """Write `report.md`, `results.csv`, `summary.json` and `figures/*.png` under `out_dir`.

    `results`: a directory searched for `result.json` files, or already loaded `StageResult`s.
    `examples`: output of `lakd.report.examples.predict_examples` (`{"dataset", "columns", "examples"}`)
    for the example grid; None leaves the grid out. `intro`/`notes`: markdown put before the table /
    at the end (e.g. the command that produced the runs, its timings). Every score is in percent."""
    if not isinstance(results, (list, tuple)):
        results = find_results(results)
    if not results:
        raise ValueError("write_report: no finished stage (result.json) to report")
    results = list(results)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    names = dataset_class_names(results)
    blocks = build_blocks(results, names)
    majority = next((b.majority for b in blocks if b.majority is not None), None)

    bars = plot_role_bars(blocks, fig_dir / "roles.png") if blocks else None
    curves = plot_loss_curves(results, fig_dir / "loss_curves.png")
    miou_curves = plot_miou_curves(results, fig_dir / "miou_curves.png", majority=majority)
    grid = None
    if examples and examples.get("examples"):
        cnames, palette, ignore = _card(examples["dataset"], len(examples.get("class_names") or []) or 1)
        grid = plot_example_grid(examples["examples"], examples["columns"], palette, cnames,
                                 fig_dir / "examples.png", ignore_index=ignore,
                                 label_input_range=examples.get("label_input_range"))

    md = [f"# {title}", "",
          f"Generated {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by lakd {__version__}.", ""]
    if intro:
        md += [intro.rstrip(), ""]
    md += ["## Results", "",
           "Validation mIoU in percent. Students: one column per seed, then mean ± sample standard deviation. "
           "*with label* feeds the label-assisted teacher the ground truth through the fixed class code used at "
           "distillation time, *zero label* an all-zero label channel. Paired differences pair the runs by seed; "
           "the interval is the 95% Student t interval over seeds. A model that predicts one class on at least "
           "98% of the pixels *learned nothing*; a label-assisted teacher whose with-label and zero-label scores "
           "are within 2 points *ignores its label*.", "",
           markdown_table(blocks)]
    if bars is not None:
        md += [f"![mIoU of every role]({bars.relative_to(out_dir)})", ""]

    for dataset in dict.fromkeys(r.dataset for r in results):
        mine = [r for r in results if r.dataset == dataset]
        k = max((len(r.iou() or []) for r in mine), default=0)
        table = per_class(_per_class_columns(mine), k)
        if table:
            md += [f"## Per-class IoU: {dataset}", "", "IoU (%) per class, mean over seeds.", "",
                   per_class_markdown(table, names[dataset][:k])]

    md += ["## Figures", "",
           "### Loss", "", "Training loss terms on linear axes: the cross-entropy apart from the KD / "
           "consistency terms.", "", f"![loss curves]({curves.relative_to(out_dir)})", "",
           "### Validation mIoU during training", "",
           f"![validation mIoU curves]({miou_curves.relative_to(out_dir)})", ""]
    if grid is not None:
        md += ["### Examples", "",
               "Validation images; predictions coloured with the dataset palette, each captioned with its "
               "pixel accuracy on that image. " + examples.get("caption", ""), "",
               f"![example predictions]({grid.relative_to(out_dir)})", ""]
    md += ["## Runs", "", runs_table(results, names)]
    if notes:
        md += ["## Notes", ""] + [n.rstrip() + "\n" for n in notes]

    report = _write_text(out_dir / "report.md", "\n".join(md))
    csv_path = _write_text(out_dir / "results.csv", rows_csv(blocks))
    summary = {
        "unit": "percent (mIoU points)",
        "blocks": [b.as_dict() for b in blocks],
        "runs": [{"roles": list(r.roles), "title": r.title(r.roles[0]), "run_name": r.run_name, "seed": r.seed,
                  "arch": r.arch, "dataset": r.dataset, "stage_dir": str(r.stage_dir), "init": r.data.get("init"),
                  "miou_pct": _pct(r.miou()), "miou_with_label_pct": _pct(r.miou("label")),
                  "steps": r.data.get("steps"), "seconds": r.data.get("seconds")} for r in results],
        "figures": {k: None if v is None else str(v) for k, v in
                    (("roles", bars), ("loss_curves", curves), ("miou_curves", miou_curves), ("examples", grid))},
    }
    summary_path = _write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return ReportFiles(report, csv_path, summary_path, curves, grid, miou_curves, bars)


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 6)
