"""Eager reference losses (lakd.losses.reference) against independent hand-written numpy computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lakd.losses as L
from lakd.losses import reference as R


# ----------------------------------------------------------------------------------------- numpy references
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] matrix of bilinear (align_corners=True) weights along one axis."""
    a = np.zeros((n_out, n_in))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for o in range(n_out):
        src = o * scale
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        f = src - i0
        a[o, i0] += 1 - f
        a[o, i1] += f
    return a


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_upsample_ce(logits, labels, ignore=255):
    """Returns (loss, dlogits) computed with explicit interpolation matrices."""
    n, c, h, w = logits.shape
    H, W = labels.shape[1:]
    ah, aw = _interp_matrix(H, h), _interp_matrix(W, w)
    up = np.einsum("Yi,ncij,Xj->ncYX", ah, logits, aw)
    p = _np_softmax(up, 1)
    valid = labels != ignore
    count = max(int(valid.sum()), 1)
    total, dup = 0.0, np.zeros_like(up)
    for b in range(n):
        for y in range(H):
            for x in range(W):
                if not valid[b, y, x]:
                    continue
                k = labels[b, y, x]
                total -= math.log(p[b, k, y, x])
                dup[b, :, y, x] = p[b, :, y, x]
                dup[b, k, y, x] -= 1
    dlogits = np.einsum("Yi,ncYX,Xj->ncij", ah, dup, aw) / count
    return total / count, dlogits


def _np_pixel_kd(s, t, T):
    n, c, h, w = s.shape
    ps, pt = _np_softmax(s / T, 1), _np_softmax(t / T, 1)
    loss = 0.0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                loss += sum(pt[b, k, y, x] * (math.log(pt[b, k, y, x]) - math.log(ps[b, k, y, x]))
                            for k in range(c))
    return loss * T * T / (n * h * w), (ps - pt) * T / (n * h * w)


def _np_cwd(s, t, T):
    """CWD exactly as in the official LAD code (docs/method.md section 2):
    (T^2/(N C)) sum_{n,c} sum_p phi(t/T)_p [log phi(t/T)_p - log phi(s/T)_p]."""
    n, c, h, w = s.shape
    loss, grad = 0.0, np.zeros_like(s)
    for b in range(n):
        for k in range(c):
            ps = _np_softmax(s[b, k].reshape(-1) / T, 0)
            pt = _np_softmax(t[b, k].reshape(-1) / T, 0)
            loss += float(np.sum(pt * (np.log(pt) - np.log(ps))))
            grad[b, k] = ((ps - pt) * T / (n * c)).reshape(h, w)
    return loss * T * T / (n * c), grad


def _rand(*shape, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------------------- upsample + CE
@pytest.mark.parametrize("size", [(9, 11), (4, 5), (1, 7), (3, 3)])
def test_upsample_ce_matches_numpy(size):
    logits = _rand(2, 5, 4, 5, seed=1).requires_grad_()
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 5, (2, *size), generator=g)
    labels[0, 0, :] = 255
    labels[1, -1, -1] = 255
    loss = R.upsample_cross_entropy(logits, labels)
    loss.backward()
    ref_loss, ref_grad = _np_upsample_ce(logits.detach().numpy(), labels.numpy())
    assert loss.item() == pytest.approx(ref_loss, rel=1e-10)
    np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=1e-9, atol=1e-12)


def test_upsample_ce_float32_and_uint8_labels():
    logits = _rand(1, 3, 3, 4, seed=3).float().requires_grad_()
    labels = torch.randint(0, 3, (1, 7, 9), generator=torch.Generator().manual_seed(4)).to(torch.uint8)
    loss = L.upsample_cross_entropy(logits, labels)
    assert loss.dtype == torch.float32
    ref_loss, _ = _np_upsample_ce(logits.detach().double().numpy(), labels.long().numpy())
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)


def test_upsample_ce_ignore_pixels_excluded():
    logits = _rand(1, 4, 3, 3, seed=5)
    labels = torch.randint(0, 4, (1, 6, 6), generator=torch.Generator().manual_seed(6))
    labels[0, :2] = 255
    per_pixel = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(logits, size=(6, 6), mode="bilinear", align_corners=True),
        labels.clamp(max=3), reduction="none")
    expected = per_pixel[0, 2:].mean()
    assert R.upsample_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-12)
    # a custom ignore index
    relabelled = torch.where(labels == 255, torch.full_like(labels, 7), labels)
    got = R.upsample_cross_entropy(logits, relabelled, ignore_index=7)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_upsample_ce_all_ignored_is_zero_with_zero_grad():
    logits = _rand(2, 3, 2, 2, seed=7).requires_grad_()
    labels = torch.full((2, 5, 5), 255)
    loss = L.upsample_cross_entropy(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_upsample_ce_same_size_is_plain_ce():
    logits = _rand(2, 4, 5, 6, seed=8)
    labels = torch.randint(0, 4, (2, 5, 6), generator=torch.Generator().manual_seed(9))
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert R.upsample_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-12)


def test_upsample_ce_gradcheck():
    logits = _rand(1, 3, 3, 4, seed=10).requires_grad_()
    labels = torch.randint(0, 3, (1, 5, 7), generator=torch.Generator().manual_seed(11))
    labels[0, 1, 2] = 255
    assert torch.autograd.gradcheck(lambda x: R.upsample_cross_entropy(x, labels), (logits,))


def test_upsample_ce_bad_inputs():
    logits = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="batch size"):
        L.upsample_cross_entropy(logits, torch.zeros(3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N,H,W\]"):
        L.upsample_cross_entropy(logits, torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        L.upsample_cross_entropy(logits, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"\[N,C,h,w\]"):
        L.upsample_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 8, 8, dtype=torch.long))
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[1, 3, 3] = 3
    with pytest.raises(ValueError, match=r"value 3\b.*\[0, 3\)"):
        L.upsample_cross_entropy(logits, labels)
    labels[1, 3, 3] = -1
    with pytest.raises(ValueError, match="value -1"):
        L.upsample_cross_entropy(logits, labels)
    # without the check, out-of-range ids are ignored instead of crashing
    assert torch.isfinite(L.upsample_cross_entropy(logits, labels, check_labels=False))


# ----------------------------------------------------------------------------------------- pixel KD
def test_pixel_kd_matches_numpy_value_and_grad():
    s = _rand(2, 5, 3, 4, seed=20).requires_grad_()
    t = _rand(2, 5, 3, 4, seed=21).requires_grad_()
    loss = R.pixel_kd(s, t, 4.0)
    loss.backward()
    ref, ref_grad = _np_pixel_kd(s.detach().numpy(), t.detach().numpy(), 4.0)
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    np.testing.assert_allclose(s.grad.numpy(), ref_grad, rtol=1e-9, atol=1e-14)
    assert t.grad is None  # teacher detached


def test_pixel_kd_gradcheck():
    s = _rand(1, 3, 2, 3, seed=22).requires_grad_()
    t = _rand(1, 3, 2, 3, seed=23)
    assert torch.autograd.gradcheck(lambda x: R.pixel_kd(x, t, 2.0), (s,))


# ----------------------------------------------------------------------------------------- CWD
def test_cwd_exact_formula():
    s = _rand(2, 3, 4, 5, seed=30).requires_grad_()
    t = _rand(2, 3, 4, 5, seed=31).requires_grad_()
    loss = R.cwd(s, t, 4.0)
    loss.backward()
    ref, ref_grad = _np_cwd(s.detach().numpy(), t.detach().numpy(), 4.0)
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    np.testing.assert_allclose(s.grad.numpy(), ref_grad, rtol=1e-9, atol=1e-14)
    assert t.grad is None


def test_cwd_hand_computed_two_positions():
    # one (n, c) channel with two positions: phi = softmax([x0, x1] / T)
    T = 2.0
    s = torch.tensor([0.0, 2.0], dtype=torch.float64).view(1, 1, 1, 2)
    t = torch.tensor([1.0, -1.0], dtype=torch.float64).view(1, 1, 1, 2)
    ps = [math.exp(0) / (math.exp(0) + math.exp(1)), math.exp(1) / (math.exp(0) + math.exp(1))]
    pt = [math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5)), math.exp(-0.5) / (math.exp(0.5) + math.exp(-0.5))]
    expected = T * T * sum(q * (math.log(q) - math.log(p)) for q, p in zip(pt, ps))
    assert R.cwd(s, t, T).item() == pytest.approx(expected, rel=1e-12)


def test_cwd_gradcheck():
    s = _rand(1, 2, 2, 3, seed=32).requires_grad_()
    t = _rand(1, 2, 2, 3, seed=33)
    assert torch.autograd.gradcheck(lambda x: R.cwd(x, t, 4.0), (s,))


def test_cwd_symmetric_is_sum_of_directions_with_stop_gradient():
    a = _rand(2, 3, 3, 3, seed=34).requires_grad_()
    b = _rand(2, 3, 3, 3, seed=35).requires_grad_()
    loss = R.cwd_symmetric(a, b, 4.0)
    loss.backward()
    ref_ab, grad_a = _np_cwd(a.detach().numpy(), b.detach().numpy(), 4.0)
    ref_ba, grad_b = _np_cwd(b.detach().numpy(), a.detach().numpy(), 4.0)
    assert loss.item() == pytest.approx(ref_ab + ref_ba, rel=1e-10)
    np.testing.assert_allclose(a.grad.numpy(), grad_a, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(b.grad.numpy(), grad_b, rtol=1e-9, atol=1e-14)


# ----------------------------------------------------------------------------------------- shared properties
KD_LOSSES = [("pixel_kd", R.pixel_kd), ("cwd", R.cwd), ("cwd_symmetric", R.cwd_symmetric)]


@pytest.mark.parametrize("name,fn", KD_LOSSES)
def test_zero_when_student_equals_teacher(name, fn):
    x = _rand(2, 4, 3, 5, seed=40).float()
    s = x.clone().requires_grad_()
    loss = fn(s, x.clone(), 4.0)
    assert abs(loss.item()) < 1e-6
    loss.backward()
    assert s.grad.abs().max().item() < 1e-7


@pytest.mark.parametrize("name,fn", KD_LOSSES)
def test_temperature_squared_scaling(name, fn):
    s, t = _rand(2, 4, 3, 5, seed=41), _rand(2, 4, 3, 5, seed=42)
    for T in (1.0, 2.0, 4.0):
        # the softmaxes see x/T; the result is multiplied by T^2
        assert fn(s, t, T).item() == pytest.approx(T * T * fn(s / T, t / T, 1.0).item(), rel=1e-10)
    assert fn(s, t, 4.0).item() != pytest.approx(fn(s, t, 1.0).item(), rel=1e-3)


@pytest.mark.parametrize("name,fn", KD_LOSSES)
def test_kd_bad_inputs(name, fn):
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="differ in shape"):
        fn(x, torch.zeros(2, 3, 4, 5), 1.0)
    with pytest.raises(ValueError, match="4-D"):
        fn(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        fn(x, x, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        fn(x, x, "hot")


@pytest.mark.parametrize("name,fn", KD_LOSSES)
def test_public_api_low_precision_inputs(name, fn):
    s = _rand(1, 3, 4, 4, seed=43).to(torch.bfloat16).requires_grad_()
    t = _rand(1, 3, 4, 4, seed=44).to(torch.bfloat16)
    loss = getattr(L, name)(s, t, 2.0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad.dtype == torch.bfloat16
    expected = fn(s.detach().double(), t.double(), 2.0).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------------- dispatch
def test_dispatch_choices(monkeypatch):
    from lakd.losses import dispatch

    x = torch.zeros(1, 2, 2, 2)
    monkeypatch.delenv("LAKD_LOSS_IMPL", raising=False)
    assert dispatch.select_impl(x) == "eager"  # auto on CPU
    monkeypatch.setenv("LAKD_LOSS_IMPL", "eager")
    assert dispatch.select_impl(x) == "eager"
    monkeypatch.setenv("LAKD_LOSS_IMPL", "bogus")
    with pytest.raises(ValueError, match="LAKD_LOSS_IMPL='bogus'"):
        L.pixel_kd(x, x, 1.0)
    with pytest.raises(ValueError, match="impl='nope'"):
        L.cwd(x, x, 1.0, impl="nope")
    assert L.cwd(x, x, 1.0, impl="eager").item() == 0.0  # the argument wins over the environment
    monkeypatch.setenv("LAKD_LOSS_IMPL", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        L.pixel_kd(x, x, 1.0)
