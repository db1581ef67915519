"""`lakd report RUNS_OR_SWEEP_DIR [--out DIR]`: the demo's report (tables and figures) for any finished runs.

Every stage under the folder with a `result.json` is read (ARCHITECTURE.md "Stage outputs") and given its
role from the contract alone (`lakd.report.find_results`); a sweep folder (with `.sweep/plan.json`) takes the
roles its plan gave. The example grid predicts a few validation images with the stages' exports, from the
validation manifest named by the stages' saved config.yaml, when that manifest is there.
"""
from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write the results report (tables and figures) of finished runs or of a sweep",
        description="Find every finished stage (result.json) under a folder of runs or a sweep folder and write "
                    "report.md, results.csv, summary.json and figures/*.png: per-seed results with mean ± std, "
                    "paired differences with 95% intervals and a verdict, a bar chart of every role, loss and "
                    "mIoU curves, and example predictions.")
    p.add_argument("runs", metavar="RUNS_OR_SWEEP_DIR", help="folder holding run directories (searched at any depth)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the report (default: RUNS_OR_SWEEP_DIR/report)")
    p.add_argument("--examples", type=int, default=4, metavar="N",
                   help="validation images in the example grid; 0 leaves it out (default: 4)")
    p.add_argument("--title", default=None, help="report title (default: 'lakd results: <folder name>')")
    p.set_defaults(func=run)


def _load(root: Path):
    """(results, how they were found): the sweep plan's stages when the folder is a sweep, else every
    result.json under it."""
    from lakd.report import find_results
    from lakd.sweep.collect import planned_results

    plan_path = root / ".sweep" / "plan.json"
    if plan_path.is_file():
        try:
            plan = json.loads(plan_path.read_text())
            found, _ = planned_results(plan)
        except (ValueError, KeyError, TypeError, OSError):
            found = []  # an unreadable or moved plan: fall back to the contract alone
        if found:
            return found, f"sweep `{plan.get('sweep', root.name)}` (roles from its plan)"
    return find_results(root), "every result.json under the folder (roles from the stage outputs)"


def _val_manifest(results) -> Path | None:
    """The validation manifest the stages were evaluated on (first stage whose config.yaml names one that
    exists)."""
    from lakd.config import ConfigError, config_from_yaml_text

    for r in results:
        try:
            path = config_from_yaml_text(r.files.config.read_text()).manifest("val")
        except (OSError, ConfigError, ValueError, TypeError):
            continue
        if path.is_file():
            return path
    return None


def run(args) -> int:
    from lakd.cli import UsageError

    root = Path(args.runs)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    if args.examples < 0:
        raise UsageError(f"--examples must be >= 0, got {args.examples}")
    out = Path(args.out) if args.out else root / "report"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    try:
        results, how = _load(root)
    except ValueError as exc:  # a malformed result.json names itself
        raise UsageError(str(exc)) from None
    if not results:
        raise UsageError(f"{root}: no finished stage (no result.json under it)")

    notes = []
    examples = None
    if args.examples:
        manifest = _val_manifest(results)
        if manifest is None:
            notes.append("No example grid: no stage's config.yaml names a validation manifest that exists here.")
        else:
            from lakd.report.examples import predict_examples

            try:
                examples = predict_examples(results, manifest, num_examples=args.examples)
            except (OSError, ValueError, KeyError) as exc:
                raise UsageError(f"example predictions on {manifest}: {exc} (--examples 0 leaves the grid out)"
                                 ) from None

    from lakd.report import write_report

    intro = (f"`lakd report {root}`: {len(results)} finished stage(s), {how}. Every number below was read from "
             "the stages' result.json and metrics.jsonl.")
    files = write_report(results, out, examples=examples, title=args.title or f"lakd results: {root.resolve().name}",
                         intro=intro, notes=notes)
    print(f"lakd report: {len(results)} finished stage(s) from {root}")
    print(f"  report   {files.report}")
    print(f"  table    {files.csv}, {files.summary}")
    figs = [p for p in (files.bars, files.curves, files.miou_curves, files.examples) if p is not None]
    print("  figures  " + ", ".join(str(p) for p in figs))
    for line in notes:
        print(f"  note     {line}")
    return 0
