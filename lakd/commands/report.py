"""`lakd report RUNS_OR_SWEEP_DIR [--out DIR]`: the demo's report (tables and figures) for any finished runs.

Every stage under the folder with a `result.json` is read (ARCHITECTURE.md "Stage outputs") and given its
role from the contract alone (`lakd.report.find_results`); a sweep folder (with `.sweep/plan.json`) takes the
roles its plan gave. The example grid predicts a few validation images with the stages' exports, from the
validation manifest named by the stages' saved config.yaml, when that manifest is there. Runs on a user's
`folder` dataset take their class names and colours from the card that manifest was built with (else from the
config's ``data.card``).
"""
from __future__ import annotations

import json
from pathlib import Path

from lakd.exit_codes import OK


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
    """The validation manifest the stages were evaluated on: the first one a stage's config.yaml names
    (``data.val_manifest``, else ``<data.shards_dir>/<dataset>-<val_split>.manifest.json``) that exists. The
    config is read as plain data: one this version would refuse (a moved card file, an older lakd's keys)
    still names its shards."""
    from lakd.data.manifest import manifest_name

    for r in results:
        data = r.files.read_config().get("data")
        if not isinstance(data, dict):
            continue
        path = data.get("val_manifest")
        if not path and data.get("shards_dir") and data.get("dataset"):  # saved configs hold val_split
            split = str(data.get("val_split") or "val")
            path = Path(str(data["shards_dir"])) / manifest_name(str(data["dataset"]), split)
        if path and Path(str(path)).is_file():
            return Path(str(path))
    return None


def _use_folder_card(results, manifest: Path | None) -> list[str]:
    """Runs on a user's `folder` dataset: its card (class names, palette) is the one its validation shards
    were built with, else the stages' config.yaml ``data.card``. Returns the report's note when none is read."""
    from lakd.commands._dataset_card import FOLDER, recorded_card, use_folder_card
    from lakd.data.manifest import load_manifest

    folder = [r for r in results if r.dataset == FOLDER]
    if not folder:
        return []
    candidates = []
    if manifest is not None:
        try:
            candidates.append(recorded_card(load_manifest(manifest)))
        except (ValueError, OSError):
            pass
    candidates += [(r.files.read_config().get("data") or {}).get("card") for r in folder]
    classes = max((len(r.iou() or []) for r in folder), default=0) or None
    note = use_folder_card(candidates, classes)
    return [f"Class names: {note}."] if note else []


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
    from lakd.io import unwritable_reason

    reason = unwritable_reason(out)  # checked before any work (runs kept on read-only storage: give --out)
    if reason:
        raise UsageError(f"--out {out}: {reason}" + ("" if args.out else " (choose another folder with --out)"))
    try:
        results, how = _load(root)
    except ValueError as exc:  # a malformed result.json names itself
        raise UsageError(str(exc)) from None
    if not results:
        raise UsageError(f"{root}: no finished stage (no result.json under it)")

    manifest = _val_manifest(results)
    notes = _use_folder_card(results, manifest)
    examples = None
    if args.examples:
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
    return OK
