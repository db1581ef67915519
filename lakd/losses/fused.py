"""Fused Triton implementations of the lakd losses as ``torch.autograd.Function``s.

Use them through `lakd.losses` (which dispatches); calling these directly always runs the kernels (on CUDA
tensors, or on CPU tensors under ``TRITON_INTERPRET=1``). Values and gradients equal the eager reference
(`lakd.losses.reference`) up to float32 rounding; see `lakd.losses._triton_kernels` for what each kernel does.

Memory: the forward passes keep only per-row log-sum-exps (pixel KD: one float per pixel and tensor; CWD: one
per channel; upsample CE: one per label pixel) besides the inputs autograd holds anyway; no softmax,
log-softmax or upsampled-logit tensor exists at any time.

``TUNING`` holds the tile-size limits; tests shrink them to exercise the chunked (online log-sum-exp) paths on
small tensors.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
import triton
from torch.autograd.function import once_differentiable

from lakd import IGNORE_INDEX
from lakd.losses import reference
from lakd.losses import _triton_kernels as K
from lakd.losses.dispatch import interpreter_enabled

__all__ = ["upsample_cross_entropy", "pixel_kd", "cwd", "cwd_symmetric", "TUNING"]

TUNING = {
    # largest tile along the softmax axis before switching to chunks + an online log-sum-exp: pixel KD (classes)
    # and CWD (spatial positions; 8192 = a 64x128 map at 1/8 of 512x1024 is read exactly once)
    "kd_max_block_k": 256,
    "cwd_max_block_k": 8192,
    # largest class tile of the upsample-CE forward (larger C: chunks + online lse) and of its backward (larger
    # C: more class blocks in the grid; 32 keeps the gather kernel at ~100 registers, no spills, on sm_80/90)
    "ce_max_block_c": 256,
    "ce_bwd_max_block_c": 32,
    # backward gather tile: (low-res rows, low-res columns, label pixels per chunk of a label row); the
    # interpreter prefers few, big program instances
    "ce_bwd_tile": (8, 16, 32),
    "interp_ce_bwd_tile": (16, 32, 128),
    "interp_ce_bwd_max_block_c": 256,
    # elements per program on the GPU: softmax-KL kernels, upsample-CE forward
    "gpu_tile": 4096,
    "gpu_ce_tile": 2048,
    # elements per program in the interpreter (each program instance costs ~ms there: use few, big ones)
    "interp_tile": 1 << 16,
    # 64-bit index arithmetic even for small tensors (tests exercise that code path with it)
    "force_int64": False,
}


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _interpreted() -> bool:
    """True when the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 when this module's
    kernels were imported); then they run on CPU tensors and prefer few, large program instances."""
    return type(K._softmax_kl_fwd).__name__ == "InterpretedFunction"


def _tile_elems(kind: str = "gpu_tile") -> int:
    return TUNING["interp_tile"] if _interpreted() else TUNING[kind]


def _num_warps(elems: int) -> int:
    """About 8-16 elements per thread and tensor (register use checked offline with ptxas for sm_80/sm_90)."""
    return min(16, max(4, elems // 256))


_CAPTURE: list | None = None


def _launch(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel[grid](*args, **meta)``, or only record it inside `capture_launches()`."""
    if _CAPTURE is not None:
        _CAPTURE.append((kernel, tuple(grid), args, meta))
        return
    first = args[0]
    if first.is_cuda:  # launch on the tensors' device, whatever the current device is
        with torch.cuda.device(first.device):
            kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)


@contextlib.contextmanager
def capture_launches():
    """Record the kernel launches instead of running them (the loss functions then accept ``meta`` tensors).
    Yields the list of ``(kernel, grid, args, meta)``; tests use it to compile exactly the launched
    configurations for GPU targets ahead of time, without a GPU."""
    global _CAPTURE
    previous, _CAPTURE = _CAPTURE, []
    try:
        yield _CAPTURE
    finally:
        _CAPTURE = previous


def _needs_int64(*tensors: torch.Tensor) -> bool:
    """Index arithmetic must be 64-bit when a tensor has 2**31 elements or more (with some headroom)."""
    return TUNING["force_int64"] or any(t.numel() >= 2**31 - 2**20 for t in tensors)


def _check_device(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.is_cuda or _interpreted() or (_CAPTURE is not None and t.is_meta):
            continue
        hint = (" TRITON_INTERPRET=1 is set, but only after the kernels were compiled for the GPU: set it before "
                "triton and lakd.losses.fused are imported" if interpreter_enabled() else
                " (or TRITON_INTERPRET=1, set before triton is imported, to run them on the CPU)")
        raise RuntimeError(f"lakd.losses.fused: the Triton kernels need CUDA tensors, got a tensor on {t.device};"
                           + hint)


# ----------------------------------------------------------------------------------------------- softmax-KL
class _Layout:
    """Where the softmax axis lies in a contiguous [N, C, h, w] tensor."""

    def __init__(self, shape, axis: str):
        n, c, h, w = shape
        hw = h * w
        if axis == "class":  # pixel KD: one softmax over C per pixel
            self.rows, self.k, self.inner, self.outer_stride, self.k_stride = n * hw, c, hw, c * hw, hw
        else:  # CWD: one softmax over h*w per (n, c) channel
            self.rows, self.k, self.inner, self.outer_stride, self.k_stride = n * c, hw, 1, hw, 1
        self.axis = axis

    def args(self):
        return self.rows, self.k, self.inner, self.outer_stride, self.k_stride


def _kl_blocks(layout: _Layout, max_block_k: int):
    block_k = min(_next_pow2(layout.k), _next_pow2(max_block_k))
    block_k = max(block_k, 2)
    single = layout.k <= block_k
    block_r = max(1, min(_tile_elems() // block_k, _next_pow2(layout.rows)))
    if not _interpreted():
        block_r = min(block_r, 256)
    return block_r, block_k, single


def softmax_kl_forward(s: torch.Tensor, t: torch.Tensor, temperature: float, axis: str, symmetric: bool):
    """Returns (sum over rows of KL(t||s) [+ KL(s||t)], lse_s, lse_t); s and t contiguous [N,C,h,w]."""
    layout = _Layout(s.shape, axis)
    max_k = TUNING["kd_max_block_k"] if axis == "class" else TUNING["cwd_max_block_k"]
    block_r, block_k, single = _kl_blocks(layout, max_k)
    grid = (triton.cdiv(layout.rows, block_r),)
    lse_s = torch.empty(layout.rows, device=s.device, dtype=torch.float32)
    lse_t = torch.empty_like(lse_s)
    partial = torch.empty(grid[0], device=s.device, dtype=torch.float32)
    _launch(K._softmax_kl_fwd, grid,
        s, t, lse_s, lse_t, partial, *layout.args(), 1.0 / temperature,
        BLOCK_R=block_r, BLOCK_K=block_k, SINGLE=single, SYMMETRIC=symmetric, IDX64=_needs_int64(s, t),
        num_warps=_num_warps(block_r * block_k),
    )
    return partial.sum(), lse_s, lse_t


class _SoftmaxKL(torch.autograd.Function):
    """loss = T^2/denom * sum_rows [KL(t||s) (+ KL(s||t) when symmetric)]; t gets a gradient only when
    symmetric (each direction stops the gradient of its target)."""

    @staticmethod
    def forward(ctx, s, t, temperature: float, axis: str, symmetric: bool):
        s_c, t_c = s.contiguous(), t.contiguous()
        total, lse_s, lse_t = softmax_kl_forward(s_c, t_c, temperature, axis, symmetric)
        n, c, h, w = s.shape
        denom = n * h * w if axis == "class" else n * c
        ctx.save_for_backward(s_c, t_c, lse_s, lse_t)
        ctx.temperature, ctx.axis, ctx.symmetric, ctx.denom = temperature, axis, symmetric, denom
        return total * (temperature * temperature / denom)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        s, t, lse_s, lse_t = ctx.saved_tensors
        write_s = ctx.needs_input_grad[0]
        write_t = ctx.symmetric and ctx.needs_input_grad[1]
        if not (write_s or write_t):
            return None, None, None, None, None
        T = ctx.temperature
        gscale = (grad_output.detach().float() * (T / ctx.denom)).reshape(1).contiguous()
        gs, gt = _softmax_kl_grads(s, t, lse_s, lse_t, gscale, T, ctx.axis, write_s, write_t)
        return gs, gt, None, None, None


def _softmax_kl_grads(s, t, lse_s, lse_t, gscale, temperature, axis, write_s, write_t):
    layout = _Layout(s.shape, axis)
    if axis == "class":
        block_k = max(2, min(_next_pow2(layout.k), _next_pow2(TUNING["kd_max_block_k"])))
    else:
        block_k = max(2, min(_next_pow2(layout.k), _tile_elems() if _interpreted() else 1024))
    block_r = max(1, min(_tile_elems() // block_k, _next_pow2(layout.rows)))
    if not _interpreted():
        block_r = min(block_r, 256)
    gs = torch.empty_like(s) if write_s else None
    gt = torch.empty_like(t) if write_t else None
    grid = (triton.cdiv(layout.rows, block_r), triton.cdiv(layout.k, block_k))
    _launch(K._softmax_kl_bwd, grid,
        s, t, lse_s, lse_t, gscale, gs if write_s else s, gt if write_t else t,
        *layout.args(), 1.0 / temperature,
        BLOCK_R=block_r, BLOCK_K=block_k, WRITE_S=write_s, WRITE_T=write_t, IDX64=_needs_int64(s, t),
        num_warps=_num_warps(block_r * block_k),
    )
    return gs, gt


@torch.compiler.disable  # raw Triton launches: under torch.compile a graph break, never traced
def pixel_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Fused pixel-wise KD (see `lakd.losses.pixel_kd`)."""
    reference.check_logit_pair("pixel_kd", student, teacher)
    T = reference.check_temperature(temperature)
    _check_device(student, teacher)
    return _SoftmaxKL.apply(student, teacher.detach(), T, "class", False)


@torch.compiler.disable  # raw Triton launches: under torch.compile a graph break, never traced
def cwd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Fused channel-wise distillation (see `lakd.losses.cwd`)."""
    reference.check_logit_pair("cwd", student, teacher)
    T = reference.check_temperature(temperature)
    _check_device(student, teacher)
    return _SoftmaxKL.apply(student, teacher.detach(), T, "space", False)


@torch.compiler.disable  # raw Triton launches: under torch.compile a graph break, never traced
def cwd_symmetric(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Fused cwd(a, sg b) + cwd(b, sg a): one forward and one backward launch for both directions."""
    reference.check_logit_pair("cwd_symmetric", a, b)
    T = reference.check_temperature(temperature)
    _check_device(a, b)
    return _SoftmaxKL.apply(a, b, T, "space", True)


# ----------------------------------------------------------------------------------------------- upsample + CE
def _scale(n_in: int, n_out: int) -> float:
    """PyTorch's align_corners=True source scale, rounded to float32 as PyTorch computes it."""
    if n_out <= 1:
        return 0.0
    return float(np.float32(n_in - 1) / np.float32(n_out - 1))


@functools.lru_cache(maxsize=64)
def _support_ranges_host(n_out: int, n_in: int, tile: int) -> tuple:
    """For each tile of `tile` low-res indices: the [lo, hi) range of output indices whose two interpolation
    sources (i0, i0 + 1 clamped) meet the tile, computed with the kernel's float32 arithmetic, widened by 1."""
    scale = np.float32(_scale(n_in, n_out))
    src = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    out = []
    for start in range(0, n_in, tile):
        lo = int(np.searchsorted(i0, start - 1, side="left"))
        hi = int(np.searchsorted(i0, start + tile - 1, side="right"))
        out += [max(lo - 1, 0), min(hi + 1, n_out)]
    return tuple(out)


_RANGE_CACHE: dict = {}


def _support_ranges(n_out: int, n_in: int, tile: int, device: torch.device) -> torch.Tensor:
    key = (n_out, n_in, tile, str(device))
    r = _RANGE_CACHE.get(key)
    if r is None:
        r = torch.tensor(_support_ranges_host(n_out, n_in, tile), dtype=torch.int32, device=device)
        if len(_RANGE_CACHE) > 64:
            _RANGE_CACHE.clear()
        _RANGE_CACHE[key] = r
    return r


def _ce_bwd_tiles(H: int, W: int, h: int, w: int):
    """(TI, TJ, XB): low-res tile (rows x columns) and label-pixel chunk along a label row."""
    return TUNING["interp_ce_bwd_tile" if _interpreted() else "ce_bwd_tile"]


def up_ce_forward(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int):
    """Returns (loss_sum, valid_count, bad_count, lse[N*H*W]); inputs contiguous."""
    n, c, h, w = logits.shape
    H, W = labels.shape[1:]
    P = n * H * W
    block_c = min(max(_next_pow2(c), 2), _next_pow2(TUNING["ce_max_block_c"]))
    single = c <= block_c
    block_p = max(1, min(_tile_elems("gpu_ce_tile") // block_c, _next_pow2(P)))
    grid = (triton.cdiv(P, block_p),)
    lse = torch.empty(P, device=logits.device, dtype=torch.float32)
    part_loss = torch.empty(grid[0], device=logits.device, dtype=torch.float32)
    part_cnt = torch.empty(grid[0], device=logits.device, dtype=torch.int32)
    part_bad = torch.empty(grid[0], device=logits.device, dtype=torch.int32)
    _launch(K._up_ce_fwd, grid,
        logits, labels, lse, part_loss, part_cnt, part_bad,
        P, c, h, w, H, W, _scale(h, H), _scale(w, W), int(ignore_index),
        BLOCK_P=block_p, BLOCK_C=block_c, SINGLE=single, IDX64=_needs_int64(logits, labels), num_warps=_num_warps(block_p * block_c),
    )
    return part_loss.sum(), part_cnt.sum(), part_bad.sum(), lse


def up_ce_backward(logits, labels, lse, gscale, ignore_index: int):
    n, c, h, w = logits.shape
    H, W = labels.shape[1:]
    TI, TJ, XB = _ce_bwd_tiles(H, W, h, w)
    cap = TUNING["interp_ce_bwd_max_block_c" if _interpreted() else "ce_bwd_max_block_c"]
    block_c = max(16, min(_next_pow2(c), _next_pow2(cap)))
    yr = _support_ranges(H, h, TI, logits.device)
    xr = _support_ranges(W, w, TJ, logits.device)
    grad = torch.empty_like(logits)
    grid = (triton.cdiv(h, TI) * triton.cdiv(w, TJ), n, triton.cdiv(c, block_c))
    _launch(K._up_ce_bwd, grid,
        logits, labels, lse, gscale, grad, yr, xr,
        c, h, w, H, W, _scale(h, H), _scale(w, W), int(ignore_index),
        TI=TI, TJ=TJ, XB=XB, BLOCK_C=block_c, IDX64=_needs_int64(logits, labels),
        num_warps=4, num_stages=1,
    )
    return grad


class _UpsampleCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index: int, check_labels: bool):
        x = logits.contiguous()
        lab = labels.contiguous()
        total, count, bad, lse = up_ce_forward(x, lab, ignore_index)
        if check_labels and _CAPTURE is None and int(bad) > 0:  # one host sync, on a scalar the kernel already reduced
            reference.check_label_values(labels, logits.shape[1], ignore_index)
        denom = count.clamp_min(1).to(torch.float32)
        ctx.save_for_backward(x, lab, lse, denom)
        ctx.ignore_index = ignore_index
        return total / denom

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        x, lab, lse, denom = ctx.saved_tensors
        gscale = (grad_output.detach().float() / denom).reshape(1).contiguous()
        return up_ce_backward(x, lab, lse, gscale, ctx.ignore_index), None, None, None


@torch.compiler.disable  # raw Triton launches: under torch.compile a graph break, never traced
def upsample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, *,
                           check_labels: bool = True) -> torch.Tensor:
    """Fused bilinear upsampling (align_corners=True) + cross-entropy + ignore index (see
    `lakd.losses.upsample_cross_entropy`)."""
    reference.check_ce_inputs(logits, labels)
    _check_device(logits, labels)
    return _UpsampleCE.apply(logits, labels, int(ignore_index), bool(check_labels))
