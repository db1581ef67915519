"""Eager PyTorch reference implementations of the lakd losses.

These are the ground truth the fused Triton kernels (`lakd.losses.fused`) are checked against, and the
implementation used on CPU (and wherever Triton is unavailable). All of them compute in float32 whatever the
input dtype (float64 inputs stay float64), and return a scalar of that dtype.

Formulas (T = temperature, sg = stop-gradient):

- ``upsample_cross_entropy``: bilinear upsampling (``align_corners=True``) of ``logits[N,C,h,w]`` to the label
  size ``[H,W]``, cross-entropy per pixel, mean over the pixels whose label is not ``ignore_index`` (0 when
  there are none).
- ``pixel_kd``: ``T^2 / (N*h*w) * sum_{n,p} KL(softmax_c(t/T) || softmax_c(s/T))`` - softmax over classes.
- ``cwd``: ``T^2 / (N*C) * sum_{n,c} KL(softmax_p(t_{n,c}/T) || softmax_p(s_{n,c}/T))`` - softmax over the
  ``h*w`` spatial positions of each (sample, class) channel (channel-wise distillation).
- ``cwd_symmetric(a, b)``: ``cwd(a, sg(b)) + cwd(b, sg(a))``.

The teacher (second argument) is always detached.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lakd import IGNORE_INDEX

__all__ = ["upsample_cross_entropy", "pixel_kd", "cwd", "cwd_symmetric", "check_temperature",
           "check_logit_pair", "check_ce_inputs", "check_label_values"]


# ----------------------------------------------------------------------------------------------- validation
def check_temperature(temperature) -> float:
    """Return the temperature as a float; ValueError unless it is a finite number > 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number, got {temperature!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {value}")
    return value


def check_logit_pair(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """ValueError unless student and teacher are floating [N,C,h,w] tensors of one shape on one device."""
    for role, x in (("student", student), ("teacher", teacher)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: {role} logits must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name}: {role} logits must be 4-D [N,C,h,w], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: {role} logits must be floating point, got {x.dtype}")
    if student.shape != teacher.shape:
        raise ValueError(f"{name}: student logits {tuple(student.shape)} and teacher logits "
                         f"{tuple(teacher.shape)} differ in shape (resize the teacher's logits first)")
    if student.device != teacher.device:
        raise ValueError(f"{name}: student logits on {student.device} but teacher logits on {teacher.device}")
    if student.numel() == 0:
        raise ValueError(f"{name}: empty logits of shape {tuple(student.shape)}")


def check_ce_inputs(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """ValueError unless logits is floating [N,C,h,w] and labels an integer [N,H,W] on the same device."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        raise ValueError("upsample_cross_entropy: logits must be a floating [N,C,h,w] tensor, got "
                         + (f"shape {tuple(logits.shape)} {logits.dtype}" if isinstance(logits, torch.Tensor)
                            else type(logits).__name__))
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        raise ValueError("upsample_cross_entropy: labels must be a [N,H,W] tensor, got "
                         + (f"shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                            else type(labels).__name__))
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"upsample_cross_entropy: labels must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"upsample_cross_entropy: logits {tuple(logits.shape)} and labels "
                         f"{tuple(labels.shape)} differ in batch size")
    if labels.device != logits.device:
        raise ValueError(f"upsample_cross_entropy: logits on {logits.device} but labels on {labels.device}")
    if min(logits.shape) == 0 or min(labels.shape) == 0:
        raise ValueError(f"upsample_cross_entropy: empty input (logits {tuple(logits.shape)}, "
                         f"labels {tuple(labels.shape)})")


def check_label_values(labels: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """ValueError naming the first label value that is neither a class id in [0, C) nor ignore_index."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(f"labels contain the value {value}, which is neither a class id in [0, {num_classes}) "
                         f"nor the ignore index {ignore_index}")


# ----------------------------------------------------------------------------------------------- losses
def _acc(x: torch.Tensor) -> torch.Tensor:
    """The accumulation dtype: float32, or float64 for float64 inputs (so gradcheck can run in double)."""
    return x if x.dtype == torch.float64 else x.float()


def upsample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, *,
                           check_labels: bool = True) -> torch.Tensor:
    """Bilinear (align_corners=True) upsampling of logits to the label size + cross-entropy, mean over the
    non-ignored pixels (0 if there are none). ``check_labels`` raises ValueError for label values that are
    neither a class id nor ``ignore_index``."""
    check_ce_inputs(logits, labels)
    num_classes = logits.shape[1]
    if check_labels:
        check_label_values(labels, num_classes, ignore_index)
    x = _acc(logits)
    if tuple(labels.shape[-2:]) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=True)
    target = labels.long()
    valid = target != ignore_index
    if not check_labels:  # keep cross_entropy from failing on out-of-range ids: treat them as ignored
        valid = valid & (target >= 0) & (target < num_classes)
        target = torch.where(valid, target, torch.full_like(target, ignore_index))
    total = F.cross_entropy(x, target, ignore_index=ignore_index, reduction="sum")
    count = valid.sum().clamp_min(1).to(total.dtype)
    return total / count


def pixel_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Pixel-wise KD: KL(softmax(t/T) || softmax(s/T)) over classes per pixel, mean over N*h*w pixels, * T^2."""
    check_logit_pair("pixel_kd", student, teacher)
    T = check_temperature(temperature)
    n, _, h, w = student.shape
    log_s = F.log_softmax(_acc(student) / T, dim=1)
    log_t = F.log_softmax(_acc(teacher.detach()) / T, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum()
    return kl * (T * T / (n * h * w))


def cwd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Channel-wise distillation: per (n, c) softmax over the h*w positions of logits/T, KL(t || s),
    summed and scaled by T^2 / (N*C)."""
    check_logit_pair("cwd", student, teacher)
    T = check_temperature(temperature)
    n, c = student.shape[:2]
    log_s = F.log_softmax(_acc(student).flatten(2) / T, dim=2)
    log_t = F.log_softmax(_acc(teacher.detach()).flatten(2) / T, dim=2)
    kl = (log_t.exp() * (log_t - log_s)).sum()
    return kl * (T * T / (n * c))


def cwd_symmetric(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric CWD of the dual-path teacher: cwd(a, sg(b)) + cwd(b, sg(a))."""
    check_logit_pair("cwd_symmetric", a, b)
    return cwd(a, b.detach(), temperature) + cwd(b, a.detach(), temperature)
