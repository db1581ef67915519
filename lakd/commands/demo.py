"""`lakd demo`: the whole LAD pipeline on the built-in synthetic dataset, on this machine (CPU, no Slurm).

Builds the synthetic shards, runs the demo sweep (lakd/sweeps/demo.yaml) with the local executor - the
label-assisted teacher (single path, and the paper's dual path), per seed the baseline (seed 0's is also the
image-only teacher), then per seed the baseline fine-tuned without a teacher (the control) and the KD and LAD
students fine-tuned from the baseline - evaluates them and writes a report with the results table, per-class
IoU, training curves and example predictions. Independent stages run side by side (--procs, one per core).
Running it again resumes / skips what finished (each --size has its own folders; more --seeds reuse the seeds
already trained).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path

from lakd.exit_codes import FAILED, INTERRUPTED, OK

# Per size: shard sizes and extra overrides (for every stage, and for the fine-tuned students and control).
# `default` is the sweep file as shipped (docs/results.md has its measured times); `tiny` is the smoke-test size
# (tests/demo).
SIZES = {
    "tiny": {
        "train_samples": 48, "val_samples": 8, "image_size": 32,
        "overrides": {"train.iters": 12, "train.batch_size": 4, "data.crop_size": [32, 32], "eval.every": 6,
                      "checkpoint.every": 6, "log.print_every": 4},
        "student_overrides": {"train.iters": 6, "eval.every": 3, "checkpoint.every": 3, "log.print_every": 3},
    },
    "default": {"train_samples": 2000, "val_samples": 200, "image_size": 64, "overrides": {},
                "student_overrides": {}},
}
DEMO_SWEEP = "demo"
DEFAULT_SEEDS = 3  # the shipped sweep file the demo runs (lakd/sweeps/demo.yaml)


def register(subparsers) -> None:
    from lakd.commands._help import DefaultsHelpFormatter

    p = subparsers.add_parser(
        "demo", help="run the whole LAD pipeline on synthetic data on this machine and write a report",
        description="Build synthetic shards, train a label-assisted teacher, an image-only teacher and baseline / "
                    "KD / LAD students (local executor, CPU is fine), evaluate them and write a markdown report "
                    "with the results table and figures.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="folder for shards, runs and report")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N",
                   help="train the students and baselines with seeds 0..N-1 (the table shows each seed, the mean "
                        "and the paired differences with 95%% intervals)")
    p.add_argument("--procs", type=int, default=None, metavar="N",
                   help="stages run side by side, one thread each (default: one per CPU core)")
    p.add_argument("--size", choices=tuple(SIZES), default="default",
                   help="tiny: a smoke test in under a minute; default: the demo (about 6-7 minutes on 2 CPU cores)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", dest="overrides",
                   help="config override for every stage, e.g. --set noise.scale=10 (repeatable)")
    p.add_argument("--examples", type=int, default=4, metavar="N", help="validation images in the example grid")
    p.set_defaults(func=run)


class _Clock:
    """Log lines prefixed with the time since the demo started, flushed at once (progress stays visible
    when the output goes to a file or a pipe)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60:02d}:{s % 60:02d}"

    def __call__(self, msg: str) -> None:
        print(f"[demo {self.elapsed()}] {msg}", flush=True)


def _parse_overrides(items: list[str]) -> dict:
    """``--set`` items as the sweep's flat overrides, read by lakd train's parser."""
    from lakd.cli import UsageError
    from lakd.config import ConfigError, parse_override

    out = {}
    for item in items:
        try:
            key, value = parse_override(item)
        except ConfigError:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. noise.scale=10") from None
        out[key] = value
    return out


def demo_spec(out: Path, size: str, seeds: int, overrides: dict | None = None) -> dict:
    """The demo's sweep (as a mapping): the shipped tiny sweep with this size's lengths, `seeds` seeds, and
    everything written under `out` (shards in `out/shards/<size>`, runs in `out/runs/demo_<size>[_<hash of
    the overrides>]`)."""
    import yaml

    from lakd.sweep.spec import SWEEPS_DIR

    raw = yaml.safe_load((SWEEPS_DIR / f"{DEMO_SWEEP}.yaml").read_text())  # the shipped file, whatever the cwd
    spec = copy.deepcopy(raw)
    sz = SIZES[size]
    # runs with --set overrides get their own folder: a finished stage is reused by name, never retrained
    tag = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8] if overrides else ""
    spec["name"] = f"demo_{size}" + (f"_{tag}" if tag else "")
    spec["runs_dir"] = str(out / "runs")
    spec["seeds"] = list(range(seeds))
    spec["teacher_seed"] = 0
    spec["overrides"] = {**(raw.get("overrides") or {}), **sz["overrides"], **(overrides or {})}
    stage_over = spec.setdefault("stage_overrides", {})
    stage_over["student"] = {**(stage_over.get("student") or {}), **sz["student_overrides"], **(overrides or {})}
    (ds,) = spec["datasets"].values()
    ds["overrides"] = {**(ds.get("overrides") or {}), "data.shards_dir": str(out / "shards" / size)}
    shards = ds.setdefault("shards", {})
    shards["splits"] = {"train": {"num_samples": sz["train_samples"], "image_size": sz["image_size"]},
                        "val": {"num_samples": sz["val_samples"], "image_size": sz["image_size"]}}
    return spec


def run(args) -> int:
    from lakd.cli import UsageError

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.examples < 0:
        raise UsageError(f"--examples must be >= 0, got {args.examples}")
    if args.procs is not None and args.procs < 1:
        raise UsageError(f"--procs must be >= 1, got {args.procs}")
    args.overrides = args.overrides or []
    overrides = _parse_overrides(args.overrides)
    out = Path(args.out).resolve()
    from lakd.io import unwritable_reason

    reason = unwritable_reason(out)  # before any work: shards, runs and report all go there
    if reason:
        raise UsageError(f"--out {out}: {reason}")
    log = _Clock()
    # One thread per stage: the demo's models are too small to gain much from a second one, and on a busy
    # 2-core machine two OpenMP threads per stage were measured 20x slower than one (they spin against the
    # other processes). Set OMP_NUM_THREADS to choose otherwise; the stages inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from lakd.sweep import make_plan
    from lakd.sweep.local import Interrupted, default_parallel, run_local

    parallel = args.procs or default_parallel()

    try:
        spec = demo_spec(out, args.size, args.seeds, overrides)
        # recorded in .sweep/source.json: `lakd sweep status|collect` in the demo's runs folder rebuild this plan
        source = {"sweep": spec, "file": None, "runs_dir": None, "set": [], "cwd": str(Path.cwd())}
        plan = make_plan(spec, executor="local", source=source)
    except ValueError as exc:  # a bad --set value (lakd.config.ConfigError) or a broken sweep file
        raise UsageError(str(exc)) from None
    stages = [j for j in plan.ordered() if j.kind == "stage"]
    log(f"LAD demo on the synthetic dataset ({args.size} size, {args.seeds} seed(s)); output in {out}")
    log(f"plan: build shards, then {len(stages)} training stages ({parallel} at a time), then the report:")
    for j in stages:
        log(f"    {j.stage:<8} {'/'.join(j.roles):<22} {j.run_name} ({j.config['train']['iters']} steps)")

    try:
        sweep = run_local(plan, parallel=parallel, log=log)
    except Interrupted as exc:
        log(f"interrupted: {exc}")
        return INTERRUPTED
    if not sweep.ok:
        log(f"stages failed: {', '.join(sweep.failed) or '-'}; not run: {', '.join(sweep.blocked) or '-'}")

    from lakd.report.examples import predict_examples
    from lakd.sweep.collect import planned_results

    results, missing = planned_results(plan.describe())
    if not results:
        log("no stage finished; no report written")
        return FAILED
    log(f"report: {len(results)} finished stage(s); predicting {args.examples} example images")
    (shard_job,) = [j for j in plan.ordered() if j.kind == "shards"]
    examples = None
    if args.examples:
        examples = predict_examples(results, shard_job.shards["manifests"]["val"], num_examples=args.examples)
    report_dir = out / ("report" + plan.spec.name[len("demo"):])  # report_<size>[_<hash of the overrides>]
    files = _write(results, report_dir, examples, plan, args, sweep, log, wall=time.monotonic() - log.t0,
                   parallel=parallel)
    _summary(files, plan, results, missing, shard_job, out, log)
    return OK if sweep.ok and not missing else FAILED


def _write(results, report_dir: Path, examples, plan, args, sweep, log, *, wall: float, parallel: int):
    from lakd.report import write_report

    spec = plan.spec
    ds = next(iter(spec.datasets.values()))
    splits = ds.shards.splits
    intro = (
        f"`lakd demo --size {args.size} --seeds {args.seeds}"
        + "".join(f" --set {o}" for o in args.overrides) + "`: the built-in synthetic dataset "
        f"({splits['train']['num_samples']} training / {splits['val']['num_samples']} validation images of "
        f"{splits['train']['image_size']} px), sweep `{DEMO_SWEEP}` run with the local executor. Every number below "
        "was measured in this run. Teachers are trained once (seed 0, from scratch): the label-assisted one with "
        "a single path (it distils the LAD students) and with the paper's two paths; the seed-0 baseline is the "
        "image-only teacher. Per seed: the baseline, then, starting from it (the official LAD pipeline), the KD and "
        "LAD students and the control fine-tuned for the same steps without a teacher. Settings and why: "
        "docs/method.md section 6.")
    ran = sum(sweep.seconds.values())
    overrides = {**spec.overrides, **{f"{k} (students, control)": v
                                      for k, v in spec.stage_overrides.get("student", {}).items()}}
    notes = [
        "Overrides on top of the `synthetic` preset: "
        + (", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "none") + ".",
        f"Time of the jobs run now: {ran:.0f} s summed over the stages, {wall:.0f} s wall with "
        f"{parallel} stage(s) at a time "
        + "(" + ", ".join(f"{k} {v:.0f} s" for k, v in sweep.seconds.items()) + ")"
        + (f"; {len(sweep.skipped_done)} job(s) had finished in an earlier run and were reused." if sweep.skipped_done
           else "."),
    ]
    files = write_report(results, report_dir, examples=examples, title="lakd demo: LAD on synthetic data",
                         intro=intro, notes=notes)
    log(f"report written: {files.report}")
    return files


def _summary(files, plan, results, missing, shard_job, out: Path, log) -> None:
    from lakd import rundir as R

    rel = lambda p: os.path.relpath(p) if str(p).startswith(os.getcwd()) else str(p)  # noqa: E731
    table = files.report.read_text().split("## Results", 1)[1].split("## Per-class", 1)[0]
    lines = [l for l in table.splitlines() if l.startswith("|") or l.startswith("- ")]
    print("", flush=True)
    print("\n".join(lines))
    print("")
    exports = [r.export_path() for r in results if r.export_path() is not None]
    log(f"done in {log.elapsed()}. Everything is under {rel(out)}:")
    print(f"  report       {rel(files.report)}   (results table, per-class IoU, figures)")
    figures = [f for f in (files.bars, files.curves, files.miou_curves, files.examples) if f]
    for i, fig in enumerate(figures):
        print(f"  {'figures' if i == 0 else '':<12} {rel(fig)}")
    print(f"  table        {rel(files.csv)}, {rel(files.summary)}")
    print(f"  sweep table  {rel(plan.sweep_dir / 'results.md')}")
    print(f"  runs         {rel(plan.sweep_dir)}/<run>/<stage>/  ({R.CONFIG}, {R.METRICS}, {R.RESULT}, "
          f"{R.CHECKPOINTS}/)")
    print(f"  exports      {len(exports)} models, e.g. {rel(exports[0]) if exports else '-'}")
    print(f"  shards       {rel(Path(shard_job.shards['out_dir']))}")
    if missing:
        print(f"  NOT FINISHED {len(missing)} stage(s): " + ", ".join(rel(m) for m in missing))
    print(f"Evaluate an export yourself: lakd eval {rel(exports[-1]) if exports else 'EXPORT'} "
          f"--shards {rel(shard_job.shards['manifests']['val'])}", flush=True)
