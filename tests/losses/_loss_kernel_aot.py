"""Compile the fused-loss kernels for NVIDIA GPU targets ahead of time, without a GPU.

The Triton interpreter runs kernels as numpy code, so it misses what only the GPU compiler checks (e.g. a
non-constexpr global inside a kernel) and says nothing about registers or shared memory. This script runs the
public fused losses (forward + backward) on ``meta`` tensors of the benchmark shapes inside
`lakd.losses.fused.capture_launches()`, compiles every captured launch configuration with Triton's own
compiler and the ptxas bundled with triton, and reads registers / stack (spills) / shared memory with the
bundled cuobjdump. Run it in a process where TRITON_INTERPRET is not set:

    python tests/losses/_loss_kernel_aot.py --arch 90 --out aot.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch

SHAPES = {  # name: (logits shape, label shape)
    "cityscapes": ((16, 19, 64, 128), (16, 512, 1024)),
    "ade20k": ((16, 150, 64, 64), (16, 512, 512)),
    "coco_stuff": ((8, 171, 64, 64), (8, 512, 512)),
}
# the most shared memory one block may use (bytes) per compute capability
MAX_SHARED = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64",
          torch.int32: "i32", torch.int16: "i16", torch.uint8: "u8", torch.int8: "i8"}


def nvidia_tools():
    import triton

    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    tools = {name: os.path.join(bindir, name) for name in ("ptxas", "cuobjdump")}
    return tools if all(os.path.exists(p) for p in tools.values()) else None


def capture(dtypes=(torch.float32, torch.bfloat16)):
    """Unique launch configurations of all losses, forward and backward, on the benchmark shapes."""
    from lakd.losses import fused

    seen = {}
    for shape_name, (lshape, yshape) in SHAPES.items():
        for dt in dtypes:
            with fused.capture_launches() as launches:
                s = torch.empty(lshape, device="meta", dtype=dt, requires_grad=True)
                t = torch.empty(lshape, device="meta", dtype=dt, requires_grad=True)
                y = torch.empty(yshape, device="meta", dtype=torch.int64)
                total = (fused.pixel_kd(s, t, 4.0) + fused.cwd(s, t, 4.0) + fused.cwd_symmetric(s, t, 4.0)
                         + fused.upsample_cross_entropy(s, y, check_labels=False))
                total.backward()
            for kernel, grid, args, meta in launches:
                sig, consts = {}, {}
                for name, value in zip(kernel.arg_names, args):
                    if isinstance(value, torch.Tensor):
                        sig[name] = "*" + DTYPES[value.dtype]
                    elif isinstance(value, bool):
                        sig[name] = "i1"
                    elif isinstance(value, int):
                        if value == 1:  # the JIT specialises 1 as a constant; do the same
                            consts[name] = 1
                        else:
                            sig[name] = "i32" if -2**31 <= value < 2**31 else "i64"
                    else:
                        sig[name] = "fp32"
                options = {k: meta.pop(k) for k in ("num_warps", "num_stages") if k in meta}
                consts.update(meta)
                key = f"{kernel.__name__}[{','.join(f'{k}={v}' for k, v in consts.items())}|" \
                      f"{','.join(f'{k}:{v}' for k, v in sig.items() if v.startswith('*'))}|{options}]"
                seen.setdefault(key, (kernel, sig, consts, options, f"{shape_name}/{DTYPES[dt]}"))
    return seen


def compile_all(arch: int, dtypes=(torch.float32, torch.bfloat16)) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    tools = nvidia_tools()
    results = {}
    for key, (kernel, sig, consts, options, where) in capture(dtypes).items():
        full_sig = dict(sig)
        full_sig.update({k: "constexpr" for k in consts})
        entry = {"first_use": where}
        try:
            compiled = triton.compile(ASTSource(fn=kernel, signature=full_sig, constexprs=consts),
                                      target=GPUTarget("cuda", arch, 32), options=options)
            entry["shared"] = int(compiled.metadata.shared)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "k.cubin")
                with open(path, "wb") as fh:
                    fh.write(compiled.asm["cubin"])
                usage = subprocess.run([tools["cuobjdump"], "-res-usage", path], capture_output=True,
                                       text=True, check=True).stdout
            m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
            entry["registers"], entry["stack"] = int(m.group(1)), int(m.group(2))
            limit = MAX_SHARED.get(arch, 101376)
            problems = []
            if entry["stack"]:
                problems.append(f"{entry['stack']} bytes of stack per thread (register spills)")
            if entry["shared"] > limit:
                problems.append(f"{entry['shared']} bytes of shared memory > {limit}")
            entry["ok"] = not problems
            if problems:
                entry["error"] = "; ".join(problems)
        except Exception as exc:  # noqa: BLE001 - reported per configuration
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        results[key] = entry
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100) or 80 (A100)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="input dtypes, comma-separated (fp32, bf16, fp16)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    if nvidia_tools() is None:
        print("triton ships no ptxas/cuobjdump here", file=sys.stderr)
        return 3
    names = {v: k for k, v in DTYPES.items()}
    results = compile_all(args.arch, tuple(names[d] for d in args.dtypes.split(",")))
    for key, entry in results.items():
        status = "ok  " if entry["ok"] else "FAIL"
        print(f"{status} sm_{args.arch} regs={entry.get('registers', '?'):>3} stack={entry.get('stack', '?')} "
              f"shared={entry.get('shared', '?'):>6} {key} {entry.get('error', '')}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0 if all(e["ok"] for e in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
