"""Kernel-vs-eager cases for the fused losses, run by tests/losses/test_losses_kernels.py.

Importing this module does not import triton. On the CPU the cases must run in a process that had
``TRITON_INTERPRET=1`` set before triton was imported; the test file therefore runs them all in one subprocess:

    TRITON_INTERPRET=1 python tests/losses/_loss_kernel_cases.py --device cpu --out results.json

and reports each case as its own test. On a GPU they run in-process on CUDA tensors.
Each case compares values and input gradients of the fused kernels (called directly, never the fallback) with
the eager reference on small awkward shapes, with a grad_output != 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback

import torch

from lakd.losses import reference as R

CASES: dict = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


# tolerances: (value rtol, value atol, grad atol relative to the largest reference gradient)
TOL = {torch.float32: (2e-5, 1e-6, 2e-5), torch.float64: (2e-5, 1e-6, 2e-5),
       torch.bfloat16: (1e-3, 1e-5, 2e-2), torch.float16: (1e-3, 1e-5, 4e-3)}


@contextlib.contextmanager
def tuning(**kw):
    from lakd.losses import fused

    old = dict(fused.TUNING)
    fused.TUNING.update(kw)
    try:
        yield
    finally:
        fused.TUNING.clear()
        fused.TUNING.update(old)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _logits(shape, seed, dtype=torch.float32, device="cpu", scale=3.0):
    return (torch.randn(*shape, generator=_gen(seed)) * scale).to(dtype).to(device)


def _labels(n, H, W, C, seed, device="cpu", ignore_frac=0.2, ignore=255, dtype=torch.int64):
    g = _gen(seed)
    lab = torch.randint(0, C, (n, H, W), generator=g)
    lab[torch.rand(n, H, W, generator=g) < ignore_frac] = ignore
    return lab.to(dtype).to(device)


FUSED_GRAD_FNS = ("_SoftmaxKLBackward", "_UpsampleCEBackward")


def compare(fused_fn, ref_fn, inputs, *, go=1.7, dtype=None, grads=None):
    """Run fused_fn and ref_fn on clones of `inputs`, backward with grad_output `go`, compare."""
    dtype = dtype or next(x.dtype for x in inputs if x.is_floating_point())
    rtol, atol, gtol = TOL[dtype]
    grads = grads if grads is not None else [x.is_floating_point() for x in inputs]
    a = [x.clone().requires_grad_(g) for x, g in zip(inputs, grads)]
    b = [x.clone().requires_grad_(g) for x, g in zip(inputs, grads)]
    out = fused_fn(*b)
    ref = ref_fn(*a)
    assert out.dtype == torch.float32 and out.dim() == 0, (out.dtype, out.shape)
    assert type(out.grad_fn).__name__ in FUSED_GRAD_FNS, f"not a fused kernel: {out.grad_fn}"
    torch.testing.assert_close(out.detach(), ref.detach().float(), rtol=rtol, atol=atol)
    (out * go).backward()
    (ref * go).backward()
    for i, (x, y) in enumerate(zip(a, b)):
        if x.grad is None:
            assert y.grad is None, f"input {i}: the fused loss produced a gradient the reference does not have"
            continue
        assert y.grad is not None, f"input {i}: no gradient from the fused loss"
        assert y.grad.dtype == x.dtype, (y.grad.dtype, x.dtype)
        scale = x.grad.float().abs().max().item() or 1.0
        err = (x.grad.float() - y.grad.float()).abs().max().item()
        assert err <= gtol * scale + 1e-12, f"input {i}: grad max abs err {err:.3e} > {gtol:.1e} * {scale:.3e}"
    return out.item(), ref.item()


def _kd_case(kind, shape, seed, device, *, T=4.0, dtype=torch.float32, tdtype=None, go=1.7):
    from lakd.losses import fused

    s = _logits(shape, seed, dtype, device)
    t = _logits(shape, seed + 1, tdtype or dtype, device)
    fused_fn, ref_fn = getattr(fused, kind), getattr(R, kind)
    grads = [True, kind == "cwd_symmetric"]
    return compare(lambda x, y: fused_fn(x, y, T), lambda x, y: ref_fn(x, y, T), [s, t], go=go, dtype=dtype,
                   grads=grads)


# ------------------------------------------------------------------------------------------------- pixel KD
@case
def kd_c19_odd(device):
    _kd_case("pixel_kd", (2, 19, 7, 9), 1, device)


@case
def kd_c150_t1(device):
    _kd_case("pixel_kd", (2, 150, 5, 3), 2, device, T=1.0, go=-0.6)


@case
def kd_c150_chunked_classes(device):
    with tuning(kd_max_block_k=32):  # 150 classes in 5 chunks: online log-sum-exp
        _kd_case("pixel_kd", (2, 150, 3, 5), 3, device)


@case
def kd_bf16(device):
    _kd_case("pixel_kd", (2, 19, 5, 7), 4, device, dtype=torch.bfloat16)


@case
def kd_fp16(device):
    _kd_case("pixel_kd", (1, 171, 3, 5), 5, device, dtype=torch.float16)


@case
def kd_bf16_student_fp32_teacher(device):
    _kd_case("pixel_kd", (2, 19, 3, 3), 6, device, dtype=torch.bfloat16, tdtype=torch.float32)


@case
def kd_zero_when_equal(device):
    from lakd.losses import fused

    x = _logits((2, 19, 5, 7), 7, device=device)
    s = x.clone().requires_grad_()
    loss = fused.pixel_kd(s, x, 4.0)
    (loss * 2).backward()
    assert abs(loss.item()) < 1e-6 and s.grad.abs().max().item() < 1e-7


# ------------------------------------------------------------------------------------------------- CWD
@case
def cwd_c19_odd(device):
    _kd_case("cwd", (2, 19, 7, 9), 10, device)


@case
def cwd_c150(device):
    _kd_case("cwd", (2, 150, 5, 3), 11, device, T=2.0, go=0.3)


@case
def cwd_chunked_positions(device):
    with tuning(cwd_max_block_k=16):  # 63 positions in 4 chunks
        _kd_case("cwd", (2, 19, 7, 9), 12, device)


@case
def cwd_bf16(device):
    _kd_case("cwd", (2, 19, 7, 9), 13, device, dtype=torch.bfloat16)


@case
def cwd_symmetric_c19(device):
    _kd_case("cwd_symmetric", (2, 19, 7, 9), 20, device)


@case
def cwd_symmetric_c150(device):
    _kd_case("cwd_symmetric", (2, 150, 3, 5), 21, device, go=-2.5)


@case
def cwd_symmetric_chunked(device):
    with tuning(cwd_max_block_k=8):
        _kd_case("cwd_symmetric", (1, 19, 5, 7), 22, device)


@case
def cwd_symmetric_bf16(device):
    _kd_case("cwd_symmetric", (2, 19, 5, 7), 23, device, dtype=torch.bfloat16)


@case
def cwd_symmetric_fp16(device):
    _kd_case("cwd_symmetric", (2, 19, 5, 7), 24, device, dtype=torch.float16)


@case
def cwd_symmetric_one_side_frozen(device):
    from lakd.losses import fused

    a = _logits((2, 19, 5, 7), 25, device=device)
    b = _logits((2, 19, 5, 7), 26, device=device)
    compare(lambda x, y: fused.cwd_symmetric(x, y, 4.0), lambda x, y: R.cwd_symmetric(x, y, 4.0), [a, b],
            grads=[False, True])


# ------------------------------------------------------------------------------------------------- upsample + CE
def _ce_case(shape, label_hw, seed, device, *, dtype=torch.float32, go=1.7, labels=None, ignore=255,
             label_dtype=torch.int64):
    from lakd.losses import fused

    n, c = shape[:2]
    x = _logits(shape, seed, dtype, device)
    if labels is None:
        labels = _labels(n, *label_hw, c, seed + 1, device, ignore=ignore, dtype=label_dtype)
    return compare(lambda z, y: fused.upsample_cross_entropy(z, y, ignore),
                   lambda z, y: R.upsample_cross_entropy(z, y, ignore), [x, labels], go=go, dtype=dtype)


@case
def ce_c19_odd(device):
    _ce_case((2, 19, 5, 7), (37, 53), 30, device)


@case
def ce_multi_tile_upsample(device):
    # several low-res tiles and label chunks per row (the GPU tile shape in the interpreter)
    with tuning(interp_ce_bwd_tile=(8, 16, 32)):
        _ce_case((1, 19, 10, 20), (23, 47), 48, device, go=-1.3)
    with tuning(interp_ce_bwd_tile=(4, 16, 16), ce_bwd_tile=(4, 16, 16)):
        _ce_case((1, 19, 9, 35), (17, 47), 49, device)


@case
def ce_c150(device):
    _ce_case((2, 150, 4, 5), (29, 31), 31, device, go=0.25)


@case
def ce_c19_ignore_and_all_ignore_image(device):
    labels = _labels(3, 23, 41, 19, 32, device, ignore_frac=0.5)
    labels[1] = 255  # one image entirely unlabelled
    _ce_case((3, 19, 4, 6), None, 33, device, labels=labels)


@case
def ce_all_ignored_is_zero(device):
    from lakd.losses import fused

    x = _logits((2, 19, 3, 4), 34, device=device).requires_grad_()
    labels = torch.full((2, 9, 11), 255, device=device)
    loss = fused.upsample_cross_entropy(x, labels)
    (loss * 3).backward()
    assert loss.item() == 0.0 and torch.count_nonzero(x.grad).item() == 0


@case
def ce_bf16(device):
    _ce_case((2, 19, 5, 7), (37, 53), 35, device, dtype=torch.bfloat16)


@case
def ce_fp16_c171(device):
    _ce_case((1, 171, 3, 4), (17, 25), 36, device, dtype=torch.float16)


@case
def ce_c150_chunked_classes(device):
    # 5 class chunks forward, 5 class blocks backward
    with tuning(ce_max_block_c=32, ce_bwd_max_block_c=32, interp_ce_bwd_max_block_c=32):
        _ce_case((2, 150, 4, 3), (15, 13), 37, device)


@case
def ce_same_size(device):
    _ce_case((2, 19, 9, 11), (9, 11), 38, device)


@case
def ce_labels_smaller_than_logits(device):
    _ce_case((2, 19, 13, 17), (6, 5), 39, device)


@case
def ce_single_row_and_column(device):
    _ce_case((1, 19, 1, 6), (1, 23), 40, device)
    _ce_case((1, 19, 5, 1), (17, 3), 41, device)


@case
def ce_uint8_labels_custom_ignore(device):
    _ce_case((2, 19, 4, 5), (21, 19), 42, device, ignore=19 + 3, label_dtype=torch.uint8)


@case
def ce_int32_labels_negative_ignore(device):
    _ce_case((2, 19, 4, 5), (21, 19), 43, device, ignore=-1, label_dtype=torch.int32)


@case
def ce_noncontiguous_inputs(device):
    from lakd.losses import fused

    x = _logits((2, 9, 19, 6), 44, device=device).permute(0, 2, 3, 1)  # [2, 19, 6, 9] non-contiguous
    labels = _labels(2, 11, 25, 19, 45, device).transpose(1, 2)  # [2, 25, 11]
    assert not x.is_contiguous() and not labels.is_contiguous()
    compare(lambda z, y: fused.upsample_cross_entropy(z, y), lambda z, y: R.upsample_cross_entropy(z, y),
            [x, labels])


@case
def ce_bad_label_raises(device):
    from lakd.losses import fused

    x = _logits((1, 19, 3, 3), 46, device=device)
    labels = _labels(1, 9, 9, 19, 47, device)
    labels[0, 4, 4] = 19
    try:
        fused.upsample_cross_entropy(x, labels)
    except ValueError as exc:
        assert "19" in str(exc) and "[0, 19)" in str(exc), exc
    else:
        raise AssertionError("no ValueError for label 19 with 19 classes")
    # without the check the bad pixel is ignored like the eager reference does
    out = fused.upsample_cross_entropy(x, labels, check_labels=False)
    ref = R.upsample_cross_entropy(x, labels, check_labels=False)
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=1e-6)


@case
def degenerate_sizes(device):
    """One class, one position, 1x1 logits, 1x1 labels."""
    _kd_case("pixel_kd", (1, 1, 3, 4), 63, device)
    _kd_case("cwd", (2, 3, 1, 1), 64, device)
    _kd_case("cwd_symmetric", (2, 1, 1, 1), 65, device)
    _ce_case((1, 1, 2, 2), (5, 5), 66, device)
    _ce_case((1, 2, 1, 1), (3, 3), 67, device)
    _ce_case((2, 3, 4, 4), (1, 1), 68, device)


@case
def int64_indexing(device):
    """The 64-bit index path (used for tensors of 2**31+ elements) on small tensors."""
    with tuning(force_int64=True):
        _kd_case("pixel_kd", (2, 19, 3, 5), 60, device)
        _kd_case("cwd_symmetric", (2, 19, 3, 5), 61, device)
        _ce_case((2, 19, 4, 5), (13, 11), 62, device)


# ------------------------------------------------------------------------------------------------- dispatch
@case
def dispatch_reaches_kernels(device):
    """The public API, forced to triton (as LAKD_LOSS_IMPL=triton does), runs the fused Functions."""
    import lakd.losses as L

    s = _logits((1, 19, 3, 5), 50, device=device).requires_grad_()
    t = _logits((1, 19, 3, 5), 51, device=device)
    labels = _labels(1, 9, 17, 19, 52, device)
    names = {
        "pixel_kd": type(L.pixel_kd(s, t, 4.0, impl="triton").grad_fn).__name__,
        "cwd": type(L.cwd(s, t, 4.0, impl="triton").grad_fn).__name__,
        "cwd_symmetric": type(L.cwd_symmetric(s, t, 4.0, impl="triton").grad_fn).__name__,
        "upsample_cross_entropy": type(L.upsample_cross_entropy(s, labels, impl="triton").grad_fn).__name__,
    }
    assert names == {"pixel_kd": "_SoftmaxKLBackward", "cwd": "_SoftmaxKLBackward",
                     "cwd_symmetric": "_SoftmaxKLBackward", "upsample_cross_entropy": "_UpsampleCEBackward"}, names
    if device == "cpu":
        assert os.environ.get("LAKD_LOSS_IMPL") == "triton"
        assert type(L.pixel_kd(s, t, 4.0).grad_fn).__name__ == "_SoftmaxKLBackward"  # via the environment


def interpreter_active() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    from lakd.losses import _triton_kernels as K

    return isinstance(K._softmax_kl_fwd, InterpretedFunction)


def run_all(device: str, names=None) -> dict:
    results = {}
    for name in names or CASES:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            CASES[name](device)
            results[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 3),
                             "cpu_seconds": round(time.process_time() - cpu, 3)}
        except Exception:  # noqa: BLE001 - reported per case
            results[name] = {"ok": False, "error": traceback.format_exc()}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args(argv)
    if args.device == "cpu" and not interpreter_active():
        print("the Triton interpreter is not active: set TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    results = run_all(args.device, args.cases or None)
    tmp = f"{args.out}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(results, fh, indent=1)
    os.replace(tmp, args.out)
    failed = [k for k, v in results.items() if not v["ok"]]
    for k in failed:
        print(f"FAILED {k}\n{results[k]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
