"""Triton kernels of the fused losses (imported only when the Triton path is used).

Whether these kernels are compiled for the GPU or run by the Triton interpreter is decided when this module is
imported (``TRITON_INTERPRET=1`` must be set before that). Every kernel loads its inputs in their own dtype
(fp32/bf16/fp16), computes and accumulates in fp32 and stores gradients in the dtype of the input they belong
to; nothing in here does bf16 arithmetic (the interpreter has none).

Two families:

``_softmax_kl_fwd`` / ``_softmax_kl_bwd`` - KL(softmax(t/T) || softmax(s/T)) along one axis of a contiguous
[N, C, h, w] pair, for a 2-D tile of "rows" x "reduced elements". A row is one softmax:
  - pixel KD: rows are the N*h*w pixels, the reduced axis is the C classes (stride h*w);
  - CWD: rows are the N*C channels, the reduced axis is the h*w positions (stride 1).
The forward pass reads s and t once (classes/positions in chunks with an online log-sum-exp when they do not fit
one tile), writes each row's two log-sum-exps (lse, a few bytes per row) and one partial KL sum per program.
The symmetric form (dual-path CWD) adds KL(softmax(s/T) || softmax(t/T)) in the same pass. The backward pass
reads s, t and the lse's once and writes grad_s = g * (softmax(s/T) - softmax(t/T)) (and grad_t = -grad_s for
the symmetric form) with g = grad_output * T / denominator. No softmax tensor is ever stored.

``_up_ce_fwd`` / ``_up_ce_bwd`` - bilinear upsampling (align_corners=True) of low-resolution logits fused with
cross-entropy and an ignore index. The forward pass handles a tile of label pixels x classes: it interpolates
the four low-res neighbours of every label pixel on the fly, writes the per-pixel lse (4 bytes per label pixel)
and partial sums of loss, valid count and invalid-label count. The backward pass is a gather, without atomics
(deterministic): each program owns a TI x TJ tile of low-res pixels and a block of classes and walks, one label
row at a time, the label pixels whose interpolation touches that tile. It recomputes dz = softmax(z) -
onehot(label) there from the saved lse and uses that bilinear upsampling is separable: the row's dz is reduced
onto the tile's TJ columns with a small matrix product (row[classes, TJ] = dz[classes, pixels] @
Wx[pixels, TJ]), then added to the two low-res rows the label row interpolates from (weights 1 - fy and fy).
That costs TJ multiply-adds per label pixel and class instead of TI*TJ for a dense 2-D weight matrix.
Full-resolution logits are never stored.
"""
from __future__ import annotations

import triton
import triton.language as tl

# "minus infinity" that keeps exp() and the online rescaling free of inf - inf
_NEG = tl.constexpr(-1.0e30)


@triton.jit
def _idx(x, IDX64: tl.constexpr):
    """Index arithmetic in int64 only when a tensor has 2**31 elements or more (int32 saves registers)."""
    if IDX64:
        return x.to(tl.int64)
    else:
        return x


@triton.jit
def _softmax_kl_fwd(
    s_ptr, t_ptr, lse_s_ptr, lse_t_ptr, part_ptr,
    R, K, INNER, OUTER_STRIDE, K_STRIDE, inv_T,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, SINGLE: tl.constexpr, SYMMETRIC: tl.constexpr,
    IDX64: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = _idx(pid, IDX64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    rows_c = tl.where(row_mask, rows, 0)
    base = _idx(rows_c // INNER, IDX64) * OUTER_STRIDE + (rows_c % INNER)
    ks = tl.arange(0, BLOCK_K)
    if SINGLE:
        kmask = ks < K
        offs = base[:, None] + _idx(ks, IDX64)[None, :] * K_STRIDE
        m2 = row_mask[:, None] & kmask[None, :]
        xs = tl.load(s_ptr + offs, mask=m2, other=0.0).to(tl.float32) * inv_T
        xt = tl.load(t_ptr + offs, mask=m2, other=0.0).to(tl.float32) * inv_T
        ms = tl.max(tl.where(m2, xs, _NEG), 1)
        mt = tl.max(tl.where(m2, xt, _NEG), 1)
        es = tl.exp(tl.where(m2, xs - ms[:, None], _NEG))
        et = tl.exp(tl.where(m2, xt - mt[:, None], _NEG))
        zs = tl.sum(es, 1)
        zt = tl.sum(et, 1)
        a_ts = tl.sum(et * (xt - xs), 1)
        if SYMMETRIC:
            a_st = tl.sum(es * (xs - xt), 1)
    else:
        ms = tl.full([BLOCK_R], _NEG, tl.float32)
        mt = tl.full([BLOCK_R], _NEG, tl.float32)
        zs = tl.zeros([BLOCK_R], tl.float32)
        zt = tl.zeros([BLOCK_R], tl.float32)
        a_ts = tl.zeros([BLOCK_R], tl.float32)
        a_st = tl.zeros([BLOCK_R], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + ks
            offs = base[:, None] + _idx(kk, IDX64)[None, :] * K_STRIDE
            m2 = row_mask[:, None] & (kk < K)[None, :]
            xs = tl.load(s_ptr + offs, mask=m2, other=0.0).to(tl.float32) * inv_T
            xt = tl.load(t_ptr + offs, mask=m2, other=0.0).to(tl.float32) * inv_T
            ms_new = tl.maximum(ms, tl.max(tl.where(m2, xs, _NEG), 1))
            mt_new = tl.maximum(mt, tl.max(tl.where(m2, xt, _NEG), 1))
            alpha_s = tl.exp(ms - ms_new)
            alpha_t = tl.exp(mt - mt_new)
            es = tl.exp(tl.where(m2, xs - ms_new[:, None], _NEG))
            et = tl.exp(tl.where(m2, xt - mt_new[:, None], _NEG))
            zs = zs * alpha_s + tl.sum(es, 1)
            zt = zt * alpha_t + tl.sum(et, 1)
            a_ts = a_ts * alpha_t + tl.sum(et * (xt - xs), 1)
            if SYMMETRIC:
                a_st = a_st * alpha_s + tl.sum(es * (xs - xt), 1)
            ms = ms_new
            mt = mt_new
    zs = tl.where(row_mask, zs, 1.0)
    zt = tl.where(row_mask, zt, 1.0)
    lse_s = ms + tl.log(zs)
    lse_t = mt + tl.log(zt)
    # KL(q_t || p_s) = sum_k q_t (x_t - x_s) - lse_t + lse_s
    kl = a_ts / zt - lse_t + lse_s
    if SYMMETRIC:
        kl += a_st / zs - lse_s + lse_t
    kl = tl.where(row_mask, kl, 0.0)
    tl.store(lse_s_ptr + rows, lse_s, mask=row_mask)
    tl.store(lse_t_ptr + rows, lse_t, mask=row_mask)
    tl.store(part_ptr + pid, tl.sum(kl, 0))


@triton.jit
def _softmax_kl_bwd(
    s_ptr, t_ptr, lse_s_ptr, lse_t_ptr, gscale_ptr, gs_ptr, gt_ptr,
    R, K, INNER, OUTER_STRIDE, K_STRIDE, inv_T,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, WRITE_S: tl.constexpr, WRITE_T: tl.constexpr,
    IDX64: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = _idx(pid_r, IDX64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    rows_c = tl.where(row_mask, rows, 0)
    base = _idx(rows_c // INNER, IDX64) * OUTER_STRIDE + (rows_c % INNER)
    kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs = base[:, None] + _idx(kk, IDX64)[None, :] * K_STRIDE
    m2 = row_mask[:, None] & (kk < K)[None, :]
    lse_s = tl.load(lse_s_ptr + rows_c)
    lse_t = tl.load(lse_t_ptr + rows_c)
    gscale = tl.load(gscale_ptr)
    xs = tl.load(s_ptr + offs, mask=m2, other=0.0).to(tl.float32) * inv_T
    xt = tl.load(t_ptr + offs, mask=m2, other=0.0).to(tl.float32) * inv_T
    ps = tl.exp(tl.where(m2, xs - lse_s[:, None], _NEG))
    qt = tl.exp(tl.where(m2, xt - lse_t[:, None], _NEG))
    g = gscale * (ps - qt)
    if WRITE_S:
        tl.store(gs_ptr + offs, g.to(gs_ptr.dtype.element_ty), mask=m2)
    if WRITE_T:
        tl.store(gt_ptr + offs, (-g).to(gt_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _bilinear_src(dst, scale, n_in):
    """Source index pair and weight of output coordinate ``dst`` (align_corners=True), as PyTorch computes it."""
    src = dst.to(tl.float32) * scale
    i0 = tl.minimum(src.to(tl.int32), n_in - 1)
    i1 = tl.minimum(i0 + 1, n_in - 1)
    frac = src - i0.to(tl.float32)
    return i0, i1, frac


@triton.jit
def _up_ce_fwd(
    x_ptr, lab_ptr, lse_ptr, part_loss_ptr, part_cnt_ptr, part_bad_ptr,
    P, C, h, w, H, W, scale_h, scale_w, ignore_index,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE: tl.constexpr, IDX64: tl.constexpr,
):
    pid = tl.program_id(0)
    p = _idx(pid, IDX64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < P
    p = tl.where(pmask, p, 0)
    X = p % W
    rest = p // W
    Y = rest % H
    n = rest // H
    y0, y1, fy = _bilinear_src(Y, scale_h, h)
    x0, x1, fx = _bilinear_src(X, scale_w, w)
    lab = tl.load(lab_ptr + p, mask=pmask, other=ignore_index).to(tl.int32)
    labelled = pmask & (lab != ignore_index)
    in_range = (lab >= 0) & (lab < C)
    valid = labelled & in_range
    bad = labelled & (~in_range)
    hw = h * w
    nbase = _idx(n, IDX64) * C * hw
    o00 = (nbase + y0 * w + x0)[:, None]
    o01 = (nbase + y0 * w + x1)[:, None]
    o10 = (nbase + y1 * w + x0)[:, None]
    o11 = (nbase + y1 * w + x1)[:, None]
    wy0 = (1.0 - fy)[:, None]
    wy1 = fy[:, None]
    wx0 = (1.0 - fx)[:, None]
    wx1 = fx[:, None]
    cs = tl.arange(0, BLOCK_C)
    if SINGLE:
        m2 = pmask[:, None] & (cs < C)[None, :]
        coff = _idx(cs, IDX64)[None, :] * hw
        v00 = tl.load(x_ptr + o00 + coff, mask=m2, other=0.0).to(tl.float32)
        v01 = tl.load(x_ptr + o01 + coff, mask=m2, other=0.0).to(tl.float32)
        v10 = tl.load(x_ptr + o10 + coff, mask=m2, other=0.0).to(tl.float32)
        v11 = tl.load(x_ptr + o11 + coff, mask=m2, other=0.0).to(tl.float32)
        z = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
        m = tl.max(tl.where(m2, z, _NEG), 1)
        ssum = tl.sum(tl.exp(tl.where(m2, z - m[:, None], _NEG)), 1)
        z_lab = tl.sum(tl.where(cs[None, :] == lab[:, None], z, 0.0), 1)
    else:
        m = tl.full([BLOCK_P], _NEG, tl.float32)
        ssum = tl.zeros([BLOCK_P], tl.float32)
        z_lab = tl.zeros([BLOCK_P], tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + cs
            m2 = pmask[:, None] & (cc < C)[None, :]
            coff = _idx(cc, IDX64)[None, :] * hw
            v00 = tl.load(x_ptr + o00 + coff, mask=m2, other=0.0).to(tl.float32)
            v01 = tl.load(x_ptr + o01 + coff, mask=m2, other=0.0).to(tl.float32)
            v10 = tl.load(x_ptr + o10 + coff, mask=m2, other=0.0).to(tl.float32)
            v11 = tl.load(x_ptr + o11 + coff, mask=m2, other=0.0).to(tl.float32)
            z = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
            m_new = tl.maximum(m, tl.max(tl.where(m2, z, _NEG), 1))
            ssum = ssum * tl.exp(m - m_new) + tl.sum(tl.exp(tl.where(m2, z - m_new[:, None], _NEG)), 1)
            z_lab += tl.sum(tl.where(cc[None, :] == lab[:, None], z, 0.0), 1)
            m = m_new
    ssum = tl.where(pmask, ssum, 1.0)
    lse = m + tl.log(ssum)
    loss = tl.where(valid, lse - z_lab, 0.0)
    tl.store(lse_ptr + p, lse, mask=pmask)
    tl.store(part_loss_ptr + pid, tl.sum(loss, 0))
    tl.store(part_cnt_ptr + pid, tl.sum(valid.to(tl.int32), 0))
    tl.store(part_bad_ptr + pid, tl.sum(bad.to(tl.int32), 0))


@triton.jit
def _up_ce_bwd(
    x_ptr, lab_ptr, lse_ptr, gscale_ptr, gx_ptr, yrange_ptr, xrange_ptr,
    C, h, w, H, W, scale_h, scale_w, ignore_index,
    TI: tl.constexpr, TJ: tl.constexpr, XB: tl.constexpr, BLOCK_C: tl.constexpr, IDX64: tl.constexpr,
):
    pid_t = tl.program_id(0)
    n = tl.program_id(1)
    pid_c = tl.program_id(2)
    n_tj = tl.cdiv(w, TJ)
    ti = pid_t // n_tj
    tj = pid_t % n_tj
    y_lo = tl.load(yrange_ptr + 2 * ti)
    y_hi = tl.load(yrange_ptr + 2 * ti + 1)
    x_lo = tl.load(xrange_ptr + 2 * tj)
    x_hi = tl.load(xrange_ptr + 2 * tj + 1)
    ii = ti * TI + tl.arange(0, TI)
    jj = tj * TJ + tl.arange(0, TJ)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    hw = h * w
    nbase = _idx(n, IDX64) * C * hw
    coff = _idx(cs, IDX64)[:, None] * hw + nbase
    lbase = _idx(n, IDX64) * H * W
    xl = tl.arange(0, XB)
    acc = tl.zeros([TI, BLOCK_C, TJ], tl.float32)
    for Y in range(y_lo, y_hi):
        Y = Y + 0 * pid_t  # a tensor in the interpreter too (there a loop index is a Python int)
        y0, y1, fy = _bilinear_src(Y, scale_h, h)
        wy0 = 1.0 - fy
        row = tl.zeros([BLOCK_C, TJ], tl.float32)
        for xb in range(x_lo, x_hi, XB):
            X = xb + xl
            pm = X < x_hi
            X = tl.where(pm, X, x_lo)
            x0, x1, fx = _bilinear_src(X, scale_w, w)
            loff = lbase + Y * W + X
            lab = tl.load(lab_ptr + loff, mask=pm, other=ignore_index).to(tl.int32)
            valid = pm & (lab != ignore_index) & (lab >= 0) & (lab < C)
            lse = tl.load(lse_ptr + loff, mask=valid, other=0.0)
            m2 = cmask[:, None] & valid[None, :]
            r0 = y0 * w
            r1 = y1 * w
            v00 = tl.load(x_ptr + coff + (r0 + x0)[None, :], mask=m2, other=0.0).to(tl.float32)
            v01 = tl.load(x_ptr + coff + (r0 + x1)[None, :], mask=m2, other=0.0).to(tl.float32)
            v10 = tl.load(x_ptr + coff + (r1 + x0)[None, :], mask=m2, other=0.0).to(tl.float32)
            v11 = tl.load(x_ptr + coff + (r1 + x1)[None, :], mask=m2, other=0.0).to(tl.float32)
            wx0 = (1.0 - fx)[None, :]
            wx1 = fx[None, :]
            z = wy0 * (wx0 * v00 + wx1 * v01) + fy * (wx0 * v10 + wx1 * v11)
            prob = tl.exp(tl.where(m2, z - lse[None, :], _NEG))
            dz = tl.where(m2, prob - tl.where(cs[:, None] == lab[None, :], 1.0, 0.0), 0.0)
            # column weights of this chunk's label pixels for the tile's low-res columns: [XB, TJ]
            aw = tl.where(x0[:, None] == jj[None, :], 1.0 - fx[:, None], 0.0) \
                + tl.where(x1[:, None] == jj[None, :], fx[:, None], 0.0)
            row += tl.dot(dz, aw, input_precision="ieee")
        # the label row Y feeds low-res rows y0 (weight 1 - fy) and y1 (weight fy)
        wy = tl.where(ii == y0, wy0, 0.0) + tl.where(ii == y1, fy, 0.0)
        acc += wy[:, None, None] * row[None, :, :]
    gscale = tl.load(gscale_ptr)
    out_offs = coff[None, :, :] + (ii * w)[:, None, None] + jj[None, None, :]
    out_mask = (ii < h)[:, None, None] & cmask[None, :, None] & (jj < w)[None, None, :]
    tl.store(gx_ptr + out_offs, (acc * gscale).to(gx_ptr.dtype.element_ty), mask=out_mask)
