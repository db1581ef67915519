"""Losses of LAD: upsample + cross-entropy, pixel-wise KD, channel-wise distillation (CWD).

Each public function dispatches once (`lakd.losses.dispatch.select_impl`): the fused Triton kernels
(`lakd.losses.fused`) on CUDA tensors, the eager reference (`lakd.losses.reference`) elsewhere; force either
with ``LAKD_LOSS_IMPL=auto|triton|eager`` or the ``impl=`` keyword. Both return a float32 scalar and give the
same values and gradients (checked by tests/losses). The teacher argument is always detached.
"""
from __future__ import annotations

import torch

from lakd import IGNORE_INDEX
from lakd.losses import reference
from lakd.losses.dispatch import requested_impl, select_impl

__all__ = ["upsample_cross_entropy", "pixel_kd", "cwd", "cwd_symmetric", "select_impl", "requested_impl"]


def _fused():
    from lakd.losses import fused  # imports triton: only when the kernels are used

    return fused


def upsample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, *,
                           check_labels: bool = True, impl: str | None = None) -> torch.Tensor:
    """Cross-entropy of ``logits[N,C,h,w]`` bilinearly upsampled (align_corners=True) to ``labels[N,H,W]``,
    mean over the pixels whose label is not ``ignore_index`` (0 if none). With ``check_labels`` a label value
    that is neither a class id in [0, C) nor ``ignore_index`` raises ValueError (costs one host sync)."""
    reference.check_ce_inputs(logits, labels)
    if select_impl(logits, labels, impl=impl) == "triton":
        return _fused().upsample_cross_entropy(logits, labels, ignore_index, check_labels=check_labels)
    return reference.upsample_cross_entropy(logits, labels, ignore_index, check_labels=check_labels)


def pixel_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float, *,
             impl: str | None = None) -> torch.Tensor:
    """Pixel-wise KD: KL(softmax_c(t/T) || softmax_c(s/T)) per pixel, mean over N*h*w pixels, times T^2."""
    reference.check_logit_pair("pixel_kd", student, teacher)
    if select_impl(student, teacher, impl=impl) == "triton":
        return _fused().pixel_kd(student, teacher, temperature)
    return reference.pixel_kd(student, teacher, temperature)


def cwd(student: torch.Tensor, teacher: torch.Tensor, temperature: float, *,
        impl: str | None = None) -> torch.Tensor:
    """Channel-wise distillation: softmax over the spatial positions of each (n, c) channel of logits/T,
    KL(t || s), summed, times T^2 / (N*C)."""
    reference.check_logit_pair("cwd", student, teacher)
    if select_impl(student, teacher, impl=impl) == "triton":
        return _fused().cwd(student, teacher, temperature)
    return reference.cwd(student, teacher, temperature)


def cwd_symmetric(a: torch.Tensor, b: torch.Tensor, temperature: float, *,
                  impl: str | None = None) -> torch.Tensor:
    """Symmetric CWD of the dual-path teacher: cwd(a, sg(b)) + cwd(b, sg(a)) (gradients reach a and b)."""
    reference.check_logit_pair("cwd_symmetric", a, b)
    if select_impl(a, b, impl=impl) == "triton":
        return _fused().cwd_symmetric(a, b, temperature)
    return reference.cwd_symmetric(a, b, temperature)
