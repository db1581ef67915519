"""benchmarks/gpu.py: the prepared GPU run. Its reduced CPU mode runs here so that it cannot rot; the goal
verdicts and the nominal-bandwidth table are checked with fabricated results."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(stem: str):
    name = f"lakd_bench_{stem}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{stem}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gpu = _load("gpu")


@pytest.mark.parametrize("name, tb_s", [
    ("NVIDIA H100 80GB HBM3", 3.35), ("NVIDIA H100 PCIe", 2.0), ("NVIDIA H100 NVL", 3.9), ("NVIDIA H200", 4.8),
    ("NVIDIA GH200 480GB", 4.0), ("NVIDIA A100-SXM4-80GB", 2.039), ("NVIDIA A100 80GB PCIe", 1.935),
    ("NVIDIA A100-SXM4-40GB", 1.555), ("NVIDIA L4", 0.3), ("NVIDIA L40S", 0.864), ("Tesla V100-SXM2-16GB", 0.9),
    ("Some Future Accelerator", None), (None, None),
])
def test_nominal_bandwidth_table(name, tb_s):
    value, what = gpu.nominal_hbm(name)
    assert value == tb_s
    assert (what == "unknown") == (tb_s is None)


def test_full_plan_fits_eight_minutes_and_measures_what_the_issue_asks(tmp_path):
    jobs = gpu.plan(False, 16, tmp_path, True)
    assert sum(j.timeout_s for j in jobs) <= 8 * 60  # even if every job runs to its own limit
    args = {j.name: " ".join(j.argv) for j in jobs}
    assert set(args) == {"losses", "step-deeplabv3", "step-pspnet", "loader"}
    assert "--dtype fp32,bf16 --shapes cityscapes,ade20k --batch 8" in args["losses"]
    for model in ("deeplabv3", "pspnet"):
        a = args[f"step-{model}"]
        assert f"--model {model} --backbone resnet18" in a and "--device cuda --precision bf16" in a
        assert "--crop 512,1024 --batch 8" in a and "--width 1 " in a
    assert "--workers 16" in args["loader"] and "--height 1024 --width 2048" in args["loader"]
    bench = _load("bench_losses")
    assert bench.SHAPES["cityscapes"] == {"logits": (8, 19, 64, 128), "labels": (8, 512, 1024)}
    assert bench.SHAPES["ade20k"] == {"logits": (8, 150, 64, 64), "labels": (8, 512, 512)}


def _fake_jobs(speedup_eager: float, speedup_compile: float, peak_ratio: float, step_ratio: float) -> dict:
    eager_ms, eager_peak = 10.0, 300.0
    row = {"dtype": "bf16", "shape": "cityscapes", "loss": "cwd", "essential_mb": 100.0,
           "eager_ms": eager_ms, "compile_ms": eager_ms / speedup_eager * speedup_compile,
           "fused_ms": eager_ms / speedup_eager, "eager_peak_mb": eager_peak, "fused_peak_mb": eager_peak * peak_ratio,
           "eager_gb_s": 100.0, "compile_gb_s": 200.0, "fused_gb_s": 2000.0,
           "speedup_vs_eager": speedup_eager, "speedup_vs_compile": speedup_compile, "peak_ratio_vs_eager": peak_ratio}
    losses = {"status": "ok", "seconds": 1.0, "log": "x", "result": {
        "rows": [row], "impls": ["eager", "compile", "fused"], "notes": [], "iters": 20, "batch": 8,
        "compile_backend": "inductor", "env": {"copy_bandwidth_gb_s": 2800.0}}}
    step = {"device": "NVIDIA H100 80GB HBM3", "model": "m", "precision": "bf16", "crop": [512, 1024], "batch": 8,
            "loader_workers": 12, "bare_ms_per_step": 100.0, "lakd_ms_per_step": 100.0 * step_ratio,
            "ratio": step_ratio, "bare_images_per_s": 80.0, "lakd_images_per_s": 80.0 / step_ratio,
            "lakd_side_ms_per_step": {}}
    loader = {"workers": 16, "cpus": 16, "images_per_s": 120.0, "image_size": [1024, 2048], "crop": [512, 1024],
              "batch_size": 8}
    jobs = {"losses": losses, "loader": {"status": "ok", "seconds": 1.0, "result": loader}}
    for m in gpu.STEP_MODELS:
        jobs[f"step-{m}"] = {"status": "ok", "seconds": 1.0, "result": step}
    return jobs


GPU_ENV = {"device": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "torch": "t", "triton": "3", "cpus": 16,
           "nominal_hbm_tb_s": 3.35, "nominal_hbm_source": "H100 SXM"}


@pytest.mark.parametrize("good", [True, False])
def test_goal_verdicts(good):
    jobs = _fake_jobs(2.5, 1.2, 0.2, 1.03) if good else _fake_jobs(1.5, 0.9, 0.5, 1.10)
    doc = gpu.build_doc("full", GPU_ENV, jobs, "start", "end")
    want = "MET" if good else "MISSED"
    row = doc["sections"]["losses"]["rows"][0]
    assert (row["goal_speed_vs_eager"], row["goal_faster_than_compile"], row["goal_peak_memory"]) == (want,) * 3
    assert {m["goal_ratio"] for m in doc["sections"]["step"]["models"].values()} == {want}
    bw = doc["sections"]["bandwidth"]
    assert bw["nominal_tb_s"] == 3.35
    fused = next(r for r in bw["rows"] if r["impl"] == "fused")
    assert fused["pct_of_nominal"] == pytest.approx(100 * 2000 / 3350)
    assert doc["sections"]["loader"]["consumers"]["pspnet"]["loader_over_gpu"] == pytest.approx(1.5)
    md = gpu.markdown(doc)
    assert want in md and "3.35 TB/s" in md
    # a CPU run never claims a goal
    cpu = gpu.build_doc("reduced", dict(GPU_ENV, device_type="cpu"), jobs, "start", "end")
    assert "MET" not in gpu.markdown(cpu) and "MISSED" not in gpu.markdown(cpu)


def test_failed_section_says_why():
    jobs = _fake_jobs(2.5, 1.2, 0.2, 1.03)
    jobs["step-pspnet"] = {"status": "timeout", "reason": "stopped after its limit of 110 s", "seconds": 110.0}
    del jobs["loader"]
    doc = gpu.build_doc("full", GPU_ENV, jobs, "start", None)
    assert doc["sections"]["step"]["status"] == "partial"
    assert "pspnet: stopped after" in doc["sections"]["step"]["reason"]
    assert doc["sections"]["loader"]["status"] == "not run yet"


def test_full_mode_without_gpu_prints_the_command_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full mode would run")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2
    assert gpu.GPU_COMMAND in proc.stderr
    assert not (tmp_path / "o").exists()


def _env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("TRITON_INTERPRET", None)
    return env


@pytest.mark.slow
def test_reduced_run_covers_every_section(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--reduced", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert gpu.GPU_COMMAND in proc.stdout
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["schema"] == gpu.SCHEMA and doc["mode"] == "reduced" and doc["finished"]
    assert doc["goals_judged"] is False
    assert set(doc["sections"]) == set(gpu.SECTIONS)
    for name, sec in doc["sections"].items():
        assert sec["status"] == "ok" or sec.get("reason"), f"{name} neither ran nor says why: {sec}"
    losses = doc["sections"]["losses"]
    assert losses["status"] == "ok"
    got = {(r["dtype"], r["shape"], r["loss"]) for r in losses["rows"]}
    assert got == {(d, s, l) for d in ("fp32", "bf16") for s in ("cityscapes-tiny", "ade20k-tiny")
                   for l in gpu.LOSSES}
    from lakd.losses.dispatch import triton_available

    for r in losses["rows"]:
        assert r["eager_ms"] > 0 and r["compile_ms"] > 0 and not r["eager_error"] and not r["compile_error"]
        if triton_available():  # the interpreter ran the fused column
            assert r["fused_ms"] > 0 and not r["fused_error"], r
    if not triton_available():
        assert any("not measured" in n for n in losses["notes"])
    assert doc["sections"]["bandwidth"]["rows"] and doc["sections"]["bandwidth"]["nominal_tb_s"] is None
    for m in gpu.STEP_MODELS:
        step = doc["sections"]["step"]["models"][m]
        assert step["status"] == "ok" and step["ratio"] > 0 and step["precision"] == "bf16"
        assert step["model"].startswith(f"{m}-resnet18")
    loader = doc["sections"]["loader"]
    assert loader["images_per_s"] > 0 and set(loader["consumers"]) == set(gpu.STEP_MODELS)
    md = (out / "gpu.md").read_text()
    for title in ("## Losses", "## Achieved bandwidth", "## Training step", "## Streaming loader", "## Sections"):
        assert title in md
    assert "no goal is judged" in md
