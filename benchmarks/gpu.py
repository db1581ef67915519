#!/usr/bin/env python
"""Every GPU measurement lakd owes, in one run that fits in 8 minutes on one H100/H200.

    bash benchmarks/gpu.sh            # = python benchmarks/gpu.py, from the repository root, on the GPU machine

Sections (each a subprocess with its own time limit, so one failure or hang cannot hide the others):

- ``losses``: fused Triton kernels vs eager vs ``torch.compile``, forward+backward time and peak memory, for
  upsample+CE, pixel KD, CWD and symmetric CWD at the Cityscapes shape (19 classes, 8x19x64x128 logits,
  8x512x1024 labels) and the ADE20K shape (150 classes, 8x150x64x64 logits, 8x512x512 labels), fp32 and bf16
  (`benchmarks/bench_losses.py`);
- ``bandwidth``: from the same rows, each variant's achieved bandwidth (bytes a two-pass kernel must move /
  time) against the measured copy bandwidth and the GPU's nominal HBM bandwidth (`NOMINAL_HBM`);
- ``step``: a bf16 training step of DeepLabV3-R18 and PSPNet-R18 at 512x1024, batch 8, through lakd's trainer
  (DeepSpeed engine, streaming loader, agreement, logging) vs a bare PyTorch loop (`benchmarks/bench_step.py`);
- ``loader``: the streaming loader's images/s with a worker on every core (1024x2048 JPEGs, 512x1024 crops;
  `benchmarks/bench_data.py --sections loader`) against the images/s each model's lakd step consumes.

Goals are printed next to the results: fused >= 2x faster than eager and faster than compile, fused peak
memory <= 1/3 of eager's, lakd step within 5% of the bare loop, and a loader that keeps up with one GPU.

Writes ``<out>/gpu.json`` (schema ``lakd-gpu-bench/1``) and ``<out>/gpu.md`` after every section, so a run cut
short keeps what it measured; each section's output goes to ``<out>/logs/<job>.log``.

``--reduced`` is the CPU smoke mode the test suite runs (tests/benchmarks/test_gpu_bench.py): tiny shapes,
one iteration, the fused kernels under the Triton interpreter (TRITON_INTERPRET=1) when Triton is installed,
``torch.compile`` with the ``aot_eager`` backend. Its numbers mean nothing; it proves every section still runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SCHEMA = "lakd-gpu-bench/1"
SECTIONS = ("losses", "bandwidth", "step", "loader")
GPU_COMMAND = "bash benchmarks/gpu.sh"
LOSSES = ("upsample_ce", "pixel_kd", "cwd", "cwd_symmetric")
STEP_MODELS = ("deeplabv3", "pspnet")
GOALS = {"fused_speedup_vs_eager_min": 2.0, "fused_speedup_vs_compile_min": 1.0, "fused_peak_ratio_vs_eager_max": 1 / 3,
         "step_ratio_max": 1.05, "loader_over_gpu_min": 1.0}

# Nominal HBM bandwidth (TB/s, vendor data sheets), matched against torch.cuda.get_device_name() in order:
# the first pattern that matches wins, so the more specific names come first.
NOMINAL_HBM = [
    (r"GH200", 4.0, "GH200 (H100 96 GB HBM3)"),
    (r"H200", 4.8, "H200 141 GB HBM3e"),
    (r"H100.*NVL", 3.9, "H100 NVL"),
    (r"H100.*PCIe", 2.0, "H100 PCIe"),
    (r"H100|H800", 3.35, "H100 SXM 80 GB HBM3"),
    (r"B200", 8.0, "B200"),
    (r"A100.*80GB.*PCIe|A100.*PCIe.*80GB", 1.935, "A100 80 GB PCIe"),
    (r"A100.*80GB", 2.039, "A100 SXM 80 GB"),
    (r"A100", 1.555, "A100 40 GB"),
    (r"A10G", 0.6, "A10G"),
    (r"\bA10\b", 0.6, "A10"),
    (r"L40", 0.864, "L40/L40S"),
    (r"\bL4\b", 0.3, "L4"),
    (r"V100", 0.9, "V100"),
    (r"\bT4\b", 0.32, "T4"),
    (r"MI300X", 5.3, "MI300X"),
    (r"MI250", 3.2, "MI250X"),
]


def nominal_hbm(device_name: str | None) -> tuple[float | None, str]:
    """(TB/s, matched product) for a device name, or (None, "unknown")."""
    for pattern, tb_s, what in NOMINAL_HBM:
        if device_name and re.search(pattern, device_name, flags=re.IGNORECASE):
            return tb_s, what
    return None, "unknown"


# --------------------------------------------------------------------------------------------- planning
@dataclass
class Job:
    name: str  # also the log/JSON file stem
    section: str
    argv: list[str]
    timeout_s: float
    env: dict = field(default_factory=dict)


def plan(reduced: bool, cpus: int, out: Path, triton: bool) -> list[Job]:
    """The subprocesses of one run, most valuable first (the time budget may cut the tail)."""
    py = sys.executable
    res = out / "raw"
    jobs = []
    if reduced:
        losses = ["--dtype", "fp32,bf16", "--shapes", "cityscapes-tiny,ade20k-tiny", "--iters", "1", "--warmup", "0",
                  "--compile-backend", "aot_eager", "--cpu"]
        env = {"TRITON_INTERPRET": "1"} if triton else {}
        if triton:
            losses.append("--interpret")
        jobs.append(Job("losses", "losses", [py, str(BENCH / "bench_losses.py"), *losses,
                                             "--json", str(res / "losses.json")], 240, env))
        step = ["--device", "cpu", "--precision", "bf16", "--width", "0.125", "--crop", "32,64", "--batch", "2",
                "--steps", "3", "--blocks", "1", "--workers", "1", "--threads", "1"]
        loader = ["--workers", str(min(2, cpus)), "--num-images", "4", "--height", "64", "--width", "128",
                  "--crop", "32,64", "--batch-size", "2", "--samples", "8"]
        step_timeout, loader_timeout = 120, 60
    else:
        losses = ["--dtype", "fp32,bf16", "--shapes", "cityscapes,ade20k", "--batch", "8", "--iters", "20",
                  "--warmup", "3", "--budget-s", "150"]
        jobs.append(Job("losses", "losses", [py, str(BENCH / "bench_losses.py"), *losses,
                                             "--json", str(res / "losses.json")], 210))
        workers = max(1, min(12, cpus - 2))
        step = ["--device", "cuda", "--precision", "bf16", "--width", "1", "--crop", "512,1024", "--batch", "8",
                "--steps", "10", "--blocks", "3", "--workers", str(workers), "--threads", "2"]
        loader = ["--workers", str(cpus), "--num-images", "32", "--height", "1024", "--width", "2048",
                  "--crop", "512,1024", "--batch-size", "8", "--samples", "256"]
        step_timeout, loader_timeout = 100, 60
    for model in STEP_MODELS:
        jobs.append(Job(f"step-{model}", "step", [py, str(BENCH / "bench_step.py"), "--model", model,
                                                  "--backbone", "resnet18", *step,
                                                  "--json", str(res / f"step-{model}.json")], step_timeout))
    jobs.append(Job("loader", "loader", [py, str(BENCH / "bench_data.py"), "--sections", "loader", *loader,
                                         "--json", str(res / "loader.json")], loader_timeout))
    return jobs


def run_job(job: Job, out: Path, remaining_s: float) -> dict:
    """Run one job; {"status": ok|failed|timeout|skipped, "reason", "seconds", "result"}."""
    if remaining_s < 15:
        return {"status": "skipped", "reason": f"time budget spent ({remaining_s:.0f} s left)", "seconds": 0.0}
    timeout = min(job.timeout_s, remaining_s)
    log_path = out / "logs" / f"{job.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = Path(job.argv[job.argv.index("--json") + 1])
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(job.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(job.argv) + "\n")
        log.flush()
        try:
            proc = subprocess.run(job.argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = round(time.perf_counter() - t0, 1)
    tail = log_path.read_text(errors="replace").splitlines()[-12:]
    if rc is None:
        return {"status": "timeout", "reason": f"stopped after its limit of {timeout:.0f} s", "seconds": seconds,
                "log": str(log_path), "log_tail": tail}
    if rc != 0 or not json_path.exists():
        return {"status": "failed", "reason": f"exit status {rc}" + ("" if json_path.exists() else ", no JSON"),
                "seconds": seconds, "log": str(log_path), "log_tail": tail}
    return {"status": "ok", "reason": None, "seconds": seconds, "log": str(log_path),
            "result": json.loads(json_path.read_text())}


# --------------------------------------------------------------------------------------------- verdicts
def _verdict(ok: bool | None, judged: bool) -> str:
    if not judged or ok is None:
        return "not judged"
    return "MET" if ok else "MISSED"


def summarize_losses(job: dict, judged: bool) -> dict:
    """The losses section: one row per (dtype, shape, loss) with times, memory and the goals' verdicts."""
    if job["status"] != "ok":
        return {k: job.get(k) for k in ("status", "reason", "seconds", "log", "log_tail")}
    res = job["result"]
    rows = []
    for r in res["rows"]:
        row = {k: r.get(k) for k in ("dtype", "shape", "loss", "skipped", "essential_mb")}
        for impl in ("eager", "compile", "fused"):
            for key in ("ms", "peak_mb", "saved_mb", "gb_s", "error"):
                row[f"{impl}_{key}"] = r.get(f"{impl}_{key}")
        row["speedup_vs_eager"] = r.get("speedup_vs_eager")
        row["speedup_vs_compile"] = r.get("speedup_vs_compile")
        row["peak_ratio_vs_eager"] = r.get("peak_ratio_vs_eager")
        sv, sc, pr = row["speedup_vs_eager"], row["speedup_vs_compile"], row["peak_ratio_vs_eager"]
        row["goal_speed_vs_eager"] = _verdict(None if sv is None else sv >= GOALS["fused_speedup_vs_eager_min"], judged)
        row["goal_faster_than_compile"] = _verdict(None if sc is None else sc > GOALS["fused_speedup_vs_compile_min"],
                                                   judged)
        row["goal_peak_memory"] = _verdict(None if pr is None else pr <= GOALS["fused_peak_ratio_vs_eager_max"], judged)
        rows.append(row)
    return {"status": "ok", "reason": None, "seconds": job["seconds"], "log": job["log"], "impls": res["impls"],
            "notes": res["notes"], "env": res["env"], "iters": res["iters"], "batch": res.get("batch"),
            "compile_backend": res.get("compile_backend"), "rows": rows}


def summarize_bandwidth(losses: dict, device_name: str | None, device_type: str) -> dict:
    """Achieved bandwidth of every measured variant against the copy bandwidth and the nominal HBM figure."""
    if losses.get("status") != "ok":
        return {"status": "skipped", "reason": f"the losses section did not run ({losses.get('reason')})"}
    tb_s, what = nominal_hbm(device_name) if device_type == "cuda" else (None, "unknown")
    copy = losses["env"].get("copy_bandwidth_gb_s")
    rows = []
    for r in losses["rows"]:
        if r.get("skipped"):
            continue
        for impl in losses["impls"]:
            gb_s = r.get(f"{impl}_gb_s")
            if gb_s is None:
                continue
            rows.append({"dtype": r["dtype"], "shape": r["shape"], "loss": r["loss"], "impl": impl,
                         "gb_s": gb_s, "pct_of_nominal": None if tb_s is None else 100 * gb_s / (1000 * tb_s),
                         "pct_of_copy": None if not copy else 100 * gb_s / copy})
    reason = None if device_type == "cuda" else "no GPU: CPU figures, no nominal HBM bandwidth to compare with"
    return {"status": "ok", "reason": reason, "device": device_name, "nominal_tb_s": tb_s,
            "nominal_source": what, "copy_gb_s": copy, "rows": rows}


def summarize_step(jobs: dict, judged: bool) -> dict:
    models = {}
    for model in STEP_MODELS:
        job = jobs.get(f"step-{model}", {"status": "skipped", "reason": "not run"})
        if job["status"] != "ok":
            models[model] = {k: job.get(k) for k in ("status", "reason", "seconds", "log", "log_tail")}
            continue
        r = job["result"]
        models[model] = {"status": "ok", "reason": None, "seconds": job["seconds"], "device": r["device"],
                         "model": r["model"], "precision": r["precision"], "crop": r["crop"], "batch": r["batch"],
                         "loader_workers": r["loader_workers"], "bare_ms": r["bare_ms_per_step"],
                         "lakd_ms": r["lakd_ms_per_step"], "ratio": r["ratio"],
                         "bare_images_per_s": r["bare_images_per_s"], "lakd_images_per_s": r["lakd_images_per_s"],
                         "lakd_side_ms_per_step": r["lakd_side_ms_per_step"], "notes": r.get("notes", []),
                         "goal_ratio": _verdict(r["ratio"] <= GOALS["step_ratio_max"], judged)}
    ok = [m for m in models.values() if m["status"] == "ok"]
    status = "ok" if len(ok) == len(models) else ("partial" if ok else "failed")
    reasons = "; ".join(f"{k}: {v['reason']}" for k, v in models.items() if v["status"] != "ok") or None
    return {"status": status, "reason": reasons, "models": models}


def summarize_loader(job: dict, step: dict, judged: bool) -> dict:
    if job["status"] != "ok":
        return {k: job.get(k) for k in ("status", "reason", "seconds", "log", "log_tail")}
    r = job["result"]
    consumers = {}
    for model, m in step["models"].items():
        if m["status"] == "ok":
            need = m["bare_images_per_s"]  # what one GPU consumes when nothing but the model limits it
            consumers[model] = {"gpu_images_per_s": need, "loader_over_gpu": r["images_per_s"] / need,
                                "goal": _verdict(r["images_per_s"] / need >= GOALS["loader_over_gpu_min"], judged)}
    return {"status": "ok", "reason": None if consumers else "no step figure to compare with",
            "seconds": job["seconds"], "workers": r["workers"], "cpus": r["cpus"], "images_per_s": r["images_per_s"],
            "image_size": r["image_size"], "crop": r["crop"], "batch_size": r["batch_size"], "consumers": consumers}


# --------------------------------------------------------------------------------------------- output
def _f(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(doc: dict) -> str:
    env = doc["env"]
    lines = [f"# lakd GPU benchmark ({doc['mode']} mode)", "",
             f"{doc['finished'] or 'unfinished'}; device: {env['device']} ({env['device_type']}); torch {env['torch']}; "
             f"triton {env['triton']}; {env['cpus']} CPUs. Command on a GPU machine: `{doc['command']}`.", ""]
    if doc["mode"] == "reduced" or env["device_type"] != "cuda":
        lines += ["**Smoke run without a GPU: the numbers below only show that every section runs; no goal is "
                  "judged.**", ""]
    secs = doc["sections"]
    # losses
    lo = secs.get("losses", {})
    lines += ["## Losses: fused vs eager vs torch.compile (forward + backward)", ""]
    if lo.get("status") != "ok":
        lines += [f"{lo.get('status', 'not run')}: {lo.get('reason')}", ""]
    else:
        lines += [f"- {n}" for n in lo["notes"]] + ([""] if lo["notes"] else [])
        lines += ["| dtype | shape | loss | eager ms | compile ms | fused ms | x eager (goal >= 2) | "
                  "x compile (goal > 1) | eager peak MB | fused peak MB | peak/eager (goal <= 0.33) |",
                  "|---|---|---|---:|---:|---:|---|---|---:|---:|---|"]
        for r in lo["rows"]:
            if r.get("skipped"):
                lines.append(f"| {r['dtype']} | {r['shape']} | {r['loss']} | skipped: {r['skipped']} |")
                continue
            ms = [("error" if r.get(f"{i}_error") else _f(r.get(f"{i}_ms"))) for i in ("eager", "compile", "fused")]
            lines.append(f"| {r['dtype']} | {r['shape']} | {r['loss']} | {' | '.join(ms)} | "
                         f"{_f(r['speedup_vs_eager'])} {r['goal_speed_vs_eager']} | "
                         f"{_f(r['speedup_vs_compile'])} {r['goal_faster_than_compile']} | "
                         f"{_f(r['eager_peak_mb'], '.1f')} | {_f(r['fused_peak_mb'], '.1f')} | "
                         f"{_f(r['peak_ratio_vs_eager'])} {r['goal_peak_memory']} |")
        errors = [(r, i) for r in lo["rows"] for i in ("eager", "compile", "fused") if r.get(f"{i}_error")]
        lines += [""] + [f"- error {r['dtype']}/{r['shape']}/{r['loss']} {i}: {r[f'{i}_error']}" for r, i in errors]
        lines.append("")
    # bandwidth
    bw = secs.get("bandwidth", {})
    lines += ["## Achieved bandwidth vs nominal HBM", ""]
    if bw.get("status") != "ok":
        lines += [f"{bw.get('status', 'not run')}: {bw.get('reason')}", ""]
    else:
        nominal = "unknown" if bw["nominal_tb_s"] is None else f"{bw['nominal_tb_s']} TB/s ({bw['nominal_source']})"
        lines += [f"Nominal HBM bandwidth: {nominal}; measured copy bandwidth: {_f(bw['copy_gb_s'], '.0f')} GB/s."
                  + (f" {bw['reason']}." if bw["reason"] else ""), "",
                  "| dtype | shape | loss | impl | GB/s | % of nominal | % of copy |", "|---|---|---|---|---:|---:|---:|"]
        for r in bw["rows"]:
            lines.append(f"| {r['dtype']} | {r['shape']} | {r['loss']} | {r['impl']} | {_f(r['gb_s'], '.3g')} | "
                         f"{_f(r['pct_of_nominal'], '.0f')} | {_f(r['pct_of_copy'], '.0f')} |")
        lines.append("")
    # step
    st = secs.get("step", {"models": {}})
    lines += ["## Training step: lakd vs bare PyTorch loop", "",
              "| model | device | precision | crop | batch | bare ms | lakd ms | lakd/bare (goal <= 1.05) | "
              "lakd images/s |", "|---|---|---|---|---:|---:|---:|---|---:|"]
    for model, m in st.get("models", {}).items():
        if m["status"] != "ok":
            lines.append(f"| {model} | {m['status']}: {m['reason']} |")
            continue
        lines.append(f"| {m['model']} | {m['device']} | {m['precision']} | {m['crop'][0]}x{m['crop'][1]} | {m['batch']} | "
                     f"{_f(m['bare_ms'])} | {_f(m['lakd_ms'])} | {_f(m['ratio'], '.3f')} {m['goal_ratio']} | "
                     f"{_f(m['lakd_images_per_s'], '.1f')} |")
    lines.append("")
    # loader
    ld = secs.get("loader", {})
    lines += ["## Streaming loader on all cores vs one GPU", ""]
    if ld.get("status") != "ok":
        lines += [f"{ld.get('status', 'not run')}: {ld.get('reason')}", ""]
    else:
        lines.append(f"{ld['images_per_s']:.1f} images/s with {ld['workers']} workers on {ld['cpus']} CPUs "
                     f"({ld['image_size'][0]}x{ld['image_size'][1]} JPEGs, {ld['crop'][0]}x{ld['crop'][1]} crops).")
        lines += ["", "| model | one GPU consumes (bare loop) images/s | loader / GPU (goal >= 1) |", "|---|---:|---|"]
        for model, c in ld["consumers"].items():
            lines.append(f"| {model} | {c['gpu_images_per_s']:.1f} | {c['loader_over_gpu']:.2f} {c['goal']} |")
        if ld["reason"]:
            lines.append(f"\n{ld['reason']}")
        lines.append("")
    lines += ["## Sections", "", "| section | status | seconds | reason |", "|---|---|---:|---|"]
    for name in SECTIONS:
        s = secs.get(name, {"status": "not run"})
        lines.append(f"| {name} | {s.get('status')} | {_f(s.get('seconds'), '.0f')} | {s.get('reason') or ''} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine())
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    tb_s, what = nominal_hbm(name) if cuda else (None, "unknown")
    return {"device": name, "device_type": "cuda" if cuda else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton_version, "cpus": os.cpu_count(),
            "python": platform.python_version(), "host": platform.node(), "nominal_hbm_tb_s": tb_s,
            "nominal_hbm_source": what}


def build_doc(mode: str, env: dict, jobs: dict, started: str, finished: str | None) -> dict:
    judged = mode == "full" and env["device_type"] == "cuda"
    losses = summarize_losses(jobs["losses"], judged) if "losses" in jobs else {"status": "not run yet"}
    step = summarize_step(jobs, judged)
    sections = {"losses": losses, "bandwidth": summarize_bandwidth(losses, env["device"], env["device_type"]),
                "step": step}
    sections["loader"] = summarize_loader(jobs["loader"], step, judged) if "loader" in jobs else {"status": "not run yet"}
    for name in ("losses", "loader"):
        sections[name].setdefault("seconds", jobs.get(name, {}).get("seconds"))
    sections["step"]["seconds"] = sum(jobs.get(f"step-{m}", {}).get("seconds") or 0 for m in STEP_MODELS)
    return {"schema": SCHEMA, "mode": mode, "command": GPU_COMMAND, "started": started, "finished": finished,
            "goals_judged": judged, "goals": GOALS, "env": env, "sections": sections}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="every lakd GPU measurement in one run (about 8 minutes)")
    ap.add_argument("--out", default=str(BENCH / "results" / "gpu"), help="folder for gpu.json, gpu.md, logs/")
    ap.add_argument("--reduced", action="store_true", help="CPU smoke mode of the test suite (tiny shapes)")
    ap.add_argument("--budget-s", type=float, default=460.0, help="total wall-clock budget (default 460 s)")
    ap.add_argument("--only", default="", help="comma-separated job names to run (losses, step-deeplabv3, "
                                               "step-pspnet, loader); default all")
    args = ap.parse_args(argv)
    out = Path(args.out)
    env = environment()
    mode = "reduced" if args.reduced else "full"
    if mode == "full" and env["device_type"] != "cuda":
        print(f"gpu.py: no CUDA device here; on a GPU machine run: {GPU_COMMAND}\n"
              "(or pass --reduced for the CPU smoke run the test suite does)", file=sys.stderr)
        return 2
    from lakd.losses.dispatch import triton_available

    jobs_plan = plan(args.reduced, env["cpus"] or 1, out, triton_available())
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {j.name for j in jobs_plan}
        if unknown:
            ap.error(f"unknown job(s) {', '.join(sorted(unknown))}")
        jobs_plan = [j for j in jobs_plan if j.name in wanted]
    out.mkdir(parents=True, exist_ok=True)
    print(f"# lakd GPU benchmark, {mode} mode, on {env['device']}; on a GPU machine the one command is: {GPU_COMMAND}")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    jobs: dict = {}
    for job in jobs_plan:
        remaining = args.budget_s - (time.perf_counter() - t0)
        print(f"[{time.perf_counter() - t0:5.0f} s] {job.name} (limit {min(job.timeout_s, remaining):.0f} s) ...",
              flush=True)
        jobs[job.name] = run_job(job, out, remaining)
        j = jobs[job.name]
        print(f"[{time.perf_counter() - t0:5.0f} s] {job.name}: {j['status']}"
              + (f" ({j['reason']})" if j.get("reason") else ""), flush=True)
        for line in j.get("log_tail", []) if j["status"] != "ok" else []:
            print(f"    | {line}")
        doc = build_doc(mode, env, jobs, started, None)
        _write(out / "gpu.json", json.dumps(doc, indent=1) + "\n")
        _write(out / "gpu.md", markdown(doc))
    finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc = build_doc(mode, env, jobs, started, finished)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    _write(out / "gpu.json", json.dumps(doc, indent=1) + "\n")
    md = markdown(doc)
    _write(out / "gpu.md", md)
    print(md)
    print(f"# wrote {out / 'gpu.json'} and {out / 'gpu.md'} in {doc['seconds']:.0f} s; on a GPU machine: {GPU_COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
