"""Fused Triton loss kernels vs the eager reference (cases in _loss_kernel_cases.py).

On the CPU the kernels run under the Triton interpreter, which must be switched on before triton is imported.
So that nothing leaks into other tests of this pytest process, all cases run once in one subprocess with
TRITON_INTERPRET=1 (module-scoped fixture), and each case is reported here as its own test. With a GPU the
same cases also run in-process on CUDA tensors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import _loss_kernel_cases as cases

pytestmark = pytest.mark.kernels

ROOT = Path(__file__).resolve().parents[2]


def _triton_installed() -> bool:
    from lakd.losses.dispatch import triton_available

    return triton_available()


@pytest.fixture(scope="module")
def interpreted_results(tmp_path_factory):
    if not _triton_installed():
        pytest.skip("triton is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("kernels") / "results.json"
    env = dict(os.environ, TRITON_INTERPRET="1", LAKD_LOSS_IMPL="triton", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, cases.__file__, "--device", "cpu", "--out", str(out)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    if not out.exists():
        pytest.fail(f"kernel case runner failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


def test_all_cases_ran(interpreted_results):
    assert sorted(interpreted_results) == sorted(cases.CASES)


@pytest.mark.parametrize("name", list(cases.CASES))
def test_kernel_interpreted(interpreted_results, name):
    result = interpreted_results[name]
    assert result["ok"], result.get("error")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(cases.CASES))
def test_kernel_cuda(name):
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        pytest.skip("TRITON_INTERPRET=1 in this process")
    cases.CASES[name]("cuda")


# ------------------------------------------------------------------------------------------------ GPU compile
@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
def test_kernels_compile_for_gpu_without_spills(tmp_path, arch):
    """Every launch configuration the benchmark shapes use compiles for sm_90 (H100) / sm_80 (A100) with
    Triton's compiler and bundled ptxas, with no register spills and shared memory within the limit.
    Catches what the interpreter cannot (e.g. non-constexpr globals in a kernel, resource blow-ups)."""
    if not _triton_installed():
        pytest.skip("triton is not installed")
    import _loss_kernel_aot as aot

    if aot.nvidia_tools() is None:
        pytest.skip("this triton build ships no ptxas/cuobjdump")
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(OMP_NUM_THREADS="1", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    args = [sys.executable, aot.__file__, "--arch", str(arch), "--out", str(out)]
    if arch != 90:
        args += ["--dtypes", "bf16"]
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(out.read_text())
    failed = {k: v["error"] for k, v in results.items() if not v["ok"]}
    assert results and not failed, failed


def test_interpreter_switched_on_too_late_is_explained():
    """TRITON_INTERPRET=1 set after the kernels were built for the GPU: a clear error, not a driver failure."""
    if not _triton_installed():
        pytest.skip("triton is not installed")
    code = ("import os, torch\n"
            "from lakd.losses import fused\n"
            "os.environ['TRITON_INTERPRET'] = '1'\n"
            "try:\n"
            "    fused.pixel_kd(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), 1.0)\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert "set it before triton and lakd.losses.fused are imported" in proc.stdout, proc.stdout + proc.stderr
