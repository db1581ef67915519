"""Benchmark the LAD losses: eager reference vs torch.compile vs fused Triton kernels.

For each loss (upsample+CE, pixel KD, CWD, symmetric CWD), shape (Cityscapes: 8x19x64x128 logits, 8x512x1024
labels; ADE20K: 8x150x64x64 logits, 8x512x512 labels) and dtype it measures forward+backward time (median of
--iters), the peak memory above the inputs (CUDA), the bytes autograd keeps for backward beyond the inputs
(every device) and the achieved bandwidth: the bytes a two-pass fused kernel must move (forward reads the
inputs once, backward reads them again and writes the gradients) divided by the time. It prints a table and
writes JSON. `benchmarks/gpu.py` runs it as one section of the prepared GPU run.

    python benchmarks/bench_losses.py                       # CUDA when present, else a CPU eager-vs-compile table
    python benchmarks/bench_losses.py --dtype fp32,bf16 --json out.json

Goals (on a GPU): fused >= 2x faster than eager, <= 1/3 of its peak memory, faster than torch.compile;
the pixel-KD forward kernel within 2x of the time to read its inputs once at the measured memory bandwidth.
Without CUDA the fused kernels cannot be timed (the Triton interpreter is a correctness tool, not a fast path);
the script says so and compares eager with torch.compile on the CPU with a smaller batch (--batch, default 2).
`--interpret` (with TRITON_INTERPRET=1 set) runs the fused column through the interpreter anyway: the smoke
mode of the test suite, whose times mean nothing. All variants run with check_labels=False (no host sync).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lakd.losses import reference as R  # noqa: E402

SHAPES = {
    "cityscapes": {"logits": (8, 19, 64, 128), "labels": (8, 512, 1024)},
    "ade20k": {"logits": (8, 150, 64, 64), "labels": (8, 512, 512)},
    # the test suite's smoke shapes (same class counts; few pixels, so the Triton interpreter is quick)
    "cityscapes-tiny": {"logits": (1, 19, 4, 8), "labels": (1, 32, 64)},
    "ade20k-tiny": {"logits": (1, 150, 4, 4), "labels": (1, 32, 32)},
}
DEFAULT_SHAPES = "cityscapes,ade20k"
LOSSES = ("upsample_ce", "pixel_kd", "cwd", "cwd_symmetric")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
T = 4.0


def loss_fn(impl: str, name: str, compile_backend: str = "inductor"):
    """A function (x, y) -> scalar for one loss and implementation (eager | compile | fused)."""
    if impl == "fused":
        from lakd.losses import fused as mod
    else:
        mod = R
    if name == "upsample_ce":
        def fn(x, y):
            return mod.upsample_cross_entropy(x, y, 255, check_labels=False)
    elif name == "pixel_kd":
        def fn(x, y):
            return mod.pixel_kd(x, y, T)
    elif name == "cwd":
        def fn(x, y):
            return mod.cwd(x, y, T)
    else:
        def fn(x, y):
            return mod.cwd_symmetric(x, y, T)
    if impl == "compile":
        fn = torch.compile(fn, dynamic=False, backend=compile_backend)
    return fn


def make_inputs(shape: dict, name: str, dtype, device, batch: int):
    g = torch.Generator(device="cpu").manual_seed(0)
    n, c, h, w = shape["logits"]
    n = batch or n
    x = (torch.randn(n, c, h, w, generator=g) * 3).to(device=device, dtype=dtype).requires_grad_()
    if name == "upsample_ce":
        H, W = shape["labels"][1:]
        y = torch.randint(0, c, (n, H, W), generator=g)
        y[torch.rand(n, H, W, generator=g) < 0.1] = 255
        return x, y.to(device)
    y = (torch.randn(n, c, h, w, generator=g) * 3).to(device=device, dtype=dtype)
    if name == "cwd_symmetric":
        y.requires_grad_()
    return x, y


def essential_bytes(name: str, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes a two-pass fused forward+backward must move: read the inputs in the forward, read them again in
    the backward and write the gradient(s). Achieved bandwidth = this / measured time."""
    inputs = x.numel() * x.element_size() + y.numel() * y.element_size()
    grads = x.numel() * x.element_size() * (2 if name == "cwd_symmetric" else 1)
    return 2 * inputs + grads


def saved_bytes(fn, x, y) -> int:
    """Bytes autograd keeps for backward, beyond the storage of the inputs."""
    inputs = {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        ptr = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if ptr not in inputs and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(x, y)
    del loss
    return total


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(fn, x, y, device, iters: int, warmup: int, backward: bool = True):
    def step():
        x.grad = None
        if y.requires_grad:
            y.grad = None
        loss = fn(x, y)
        if backward:
            loss.backward()
        return loss

    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(fn, x, y, device) -> int | None:
    if device.type != "cuda":
        return None
    x.grad = None
    if y.requires_grad:
        y.grad = None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    loss = fn(x, y)
    loss.backward()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del loss
    return peak


def copy_bandwidth(device) -> float | None:
    """Achievable device memory bandwidth (bytes/s) from a large device-to-device copy (read + write)."""
    if device.type != "cuda":
        return None
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        b.copy_(a)
    end.record()
    end.synchronize()
    return 2 * a.numel() * 20 / (start.elapsed_time(end) / 1e3)


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    impls = ["eager", "compile"]
    notes = []
    from lakd.losses.dispatch import interpreter_enabled, triton_available

    if device.type == "cuda":
        if triton_available():
            impls.append("fused")
        else:
            notes.append("triton is not installed: no fused column")
        batch = args.batch or 0
    elif args.interpret and triton_available() and interpreter_enabled():
        impls.append("fused")
        notes.append("No CUDA device: the fused column ran under the Triton interpreter (TRITON_INTERPRET=1), "
                     "which checks that the benchmark runs, not speed; its times mean nothing.")
        batch = args.batch or 0
    else:
        why = ("triton is not installed" if not triton_available() else
               "TRITON_INTERPRET=1 is not set" if args.interpret else "they need a GPU")
        notes.append(f"No CUDA device: the fused Triton kernels were NOT measured ({why}; the Triton "
                     "interpreter only checks correctness). CPU table: eager vs torch.compile, batch "
                     f"{args.batch or 2} instead of 8, no peak-memory column.")
        batch = args.batch or 2
    if args.compile_backend != "inductor":
        notes.append(f"torch.compile ran with backend={args.compile_backend!r} (not inductor): its times are not "
                     "those of a compiled kernel")
    if args.impls:
        impls = [i for i in impls if i in args.impls.split(",")]
    bw = copy_bandwidth(device)
    rows = []
    t_start = time.perf_counter()
    for shape_name in args.shapes.split(","):  # shapes outermost: a time budget still leaves both dtypes measured
        shape = SHAPES[shape_name]
        for dtype_name in args.dtype.split(","):
            dtype = DTYPES[dtype_name]
            for name in args.losses.split(","):
                row = {"shape": shape_name, "loss": name, "dtype": dtype_name}
                if args.budget_s and time.perf_counter() - t_start > args.budget_s:
                    row["skipped"] = f"time budget of {args.budget_s:.0f} s spent"
                    rows.append(row)
                    continue
                x, y = make_inputs(shape, name, dtype, device, batch)
                row["logits"] = list(x.shape)
                if name == "upsample_ce":
                    row["labels"] = list(y.shape)
                row["essential_mb"] = essential_bytes(name, x, y) / 2**20
                for impl in impls:
                    measure_variant(row, impl, name, x, y, device, args, bw)
                if "fused_ms" in row and "eager_ms" in row:
                    row["speedup_vs_eager"] = row["eager_ms"] / row["fused_ms"]
                    if row.get("compile_ms"):
                        row["speedup_vs_compile"] = row["compile_ms"] / row["fused_ms"]
                    if row.get("eager_peak_mb"):
                        row["peak_ratio_vs_eager"] = row["fused_peak_mb"] / row["eager_peak_mb"]
                rows.append(row)
                del x, y
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
           or platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "copy_bandwidth_gb_s": bw / 1e9 if bw else None}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return {"env": env, "device_type": device.type, "dtype": args.dtype, "impls": impls, "notes": notes,
            "iters": args.iters, "batch": batch or None, "compile_backend": args.compile_backend, "rows": rows}


def measure_variant(row: dict, impl: str, name: str, x, y, device, args, bw) -> None:
    """Time, memory and bandwidth of one implementation into ``row`` (an error is recorded, not raised)."""
    if impl == "compile":
        torch._dynamo.reset()  # a fresh compile per variant: no recompile limit silently falling back to eager
    fn = loss_fn(impl, name, args.compile_backend)
    try:
        t0 = time.perf_counter()
        fn(x, y).backward()  # first call (compiles)
        _sync(device)
        row[f"{impl}_first_call_s"] = time.perf_counter() - t0
        sec = time_fwd_bwd(fn, x, y, device, args.iters, args.warmup)
        row[f"{impl}_ms"] = 1e3 * sec
        row[f"{impl}_gb_s"] = row["essential_mb"] * 2**20 / sec / 1e9
        row[f"{impl}_saved_mb"] = saved_bytes(fn, x, y) / 2**20
        peak = peak_memory(fn, x, y, device)
        row[f"{impl}_peak_mb"] = None if peak is None else peak / 2**20
        if name == "pixel_kd" and impl == "fused" and bw:
            fwd = time_fwd_bwd(fn, x, y, device, args.iters, args.warmup, backward=False)
            read_once = (x.numel() * x.element_size() + y.numel() * y.element_size()) / bw
            row["fused_fwd_ms"] = 1e3 * fwd
            row["read_inputs_once_ms"] = 1e3 * read_once
            row["fused_fwd_over_read_once"] = fwd / read_once
    except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others
        row[f"{impl}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        x.grad = None
        if y.requires_grad:
            y.grad = None


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def print_table(result: dict) -> None:
    impls = result["impls"]
    print(f"# lakd loss benchmark on {result['env']['device']} ({result['device_type']}), {result['dtype']}, "
          f"torch {result['env']['torch']}, triton {result['env']['triton']}")
    for note in result["notes"]:
        print(f"# NOTE: {note}")
    head = ["dtype", "shape", "loss"] + [f"{i} ms" for i in impls] + [f"{i} peak MB" for i in impls] \
        + [f"{i} saved MB" for i in impls] + [f"{i} GB/s" for i in impls]
    if "fused" in impls:
        head += ["x eager", "x compile", "peak/eager"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in result["rows"]:
        if "skipped" in row:
            print(f"| {row['dtype']} | {row['shape']} | {row['loss']} | skipped: {row['skipped']} |")
            continue
        cells = [row["dtype"], row["shape"], row["loss"]]
        cells += [_fmt(row.get(f"{i}_ms")) if f"{i}_error" not in row else "error" for i in impls]
        cells += [_fmt(row.get(f"{i}_peak_mb"), ".1f") for i in impls]
        cells += [_fmt(row.get(f"{i}_saved_mb"), ".1f") for i in impls]
        cells += [_fmt(row.get(f"{i}_gb_s"), ".1f") for i in impls]
        if "fused" in impls:
            cells += [_fmt(row.get("speedup_vs_eager")), _fmt(row.get("speedup_vs_compile")),
                      _fmt(row.get("peak_ratio_vs_eager"))]
        print("| " + " | ".join(cells) + " |")
    for row in result["rows"]:
        for i in impls:
            if f"{i}_error" in row:
                print(f"# {row['shape']}/{row['loss']} {i}: {row[f'{i}_error']}")
        if "fused_fwd_over_read_once" in row:
            print(f"# {row['shape']} pixel_kd fused forward {row['fused_fwd_ms']:.3f} ms = "
                  f"{row['fused_fwd_over_read_once']:.2f}x the time to read its inputs once "
                  f"({row['read_inputs_once_ms']:.3f} ms at {result['env']['copy_bandwidth_gb_s']:.0f} GB/s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="eager vs torch.compile vs fused Triton losses: time and memory")
    ap.add_argument("--dtype", default="fp32", help=f"comma-separated list of {', '.join(DTYPES)}")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated list of {', '.join(SHAPES)}")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--impls", default="", help="subset of eager,compile,fused (default: all available)")
    ap.add_argument("--batch", type=int, default=0, help="batch size (default 8 on CUDA, 2 on CPU)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (the smoke test uses aot_eager: no C++ compiler needed)")
    ap.add_argument("--budget-s", type=float, default=0.0,
                    help="stop starting new rows after this many seconds (the rest are marked skipped)")
    ap.add_argument("--interpret", action="store_true",
                    help="smoke mode: with TRITON_INTERPRET=1, run the fused column on the CPU (times meaningless)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is present")
    ap.add_argument("--json", default="", help="output JSON (default benchmarks/results/bench_losses-<dev>.json)")
    args = ap.parse_args(argv)
    for d in args.dtype.split(","):
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    for s in args.shapes.split(","):
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    for name in args.losses.split(","):
        if name not in LOSSES:
            ap.error(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    if os.environ.get("TRITON_INTERPRET", "0") == "1" and not args.interpret:
        ap.error("unset TRITON_INTERPRET: the benchmark measures compiled kernels (or pass --interpret)")
    result = run(args)
    print_table(result)
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / \
        f"bench_losses-{result['device_type']}-{args.dtype.replace(',', '-')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    print(f"# JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
