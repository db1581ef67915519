"""Label Noising Module (LNM): turn a ground-truth label map into the teacher's extra input channel(s).

Official LAD code (VOC, 21 classes), see docs/method.md:

- ignore pixels become one more "class" (slot ``num_classes``), so every pixel gets a value;
- teacher training: for every image and every slot a random code a ~ N(0, 1) (fresh for each image, each
  iteration and each of the two paths); every pixel of that slot gets the code; per-pixel Gaussian noise
  eps ~ N(0, sigma^2) with sigma = 0.03 is added; the sum is multiplied by ``scale`` = 100;
- distillation time (frozen teacher): a fixed, evenly spaced code per slot, (k - 11) / 10 for the 22 VOC slots
  (= linspace(-1.1, 1.0, 22)); generalised here to linspace(-1.1, 1.0, num_classes + 1); pixel sigma 0.02;
- a student (or the teacher evaluated without privileged information) gets zeros instead.

Codes may be k-dimensional (``code_dim`` = k extra channels): with 150-180 classes a scalar code makes
neighbouring regions collide far more often. ``code_dim = 0`` is the image-only mode (no extra channel).

All modes are vectorised: one (B, slots, k) code table is drawn and gathered with the label map.

Label values are validated by the loaders (`lakd.data.pipeline.check_label_values`, once per sample on the host
side), not here: on a GPU every value check is a host synchronisation, and the noiser runs in each training
step. ``LAKD_CHECK_LABELS=1`` (or ``check_labels=True``) turns the in-step checks back on for debugging.
"""
from __future__ import annotations

import math
import os

import torch

from lakd import IGNORE_INDEX

# The official fixed code spans [-1.1, 1.0] for its 22 slots: (k - 11) / 10, k = 0..21.
FIXED_CODE_RANGE = (-1.1, 1.0)


CHECK_LABELS_ENV = "LAKD_CHECK_LABELS"


def label_checks_enabled(explicit: bool | None = None) -> bool:
    """Whether the training step validates label values (a host sync each on a GPU): ``explicit`` when given,
    else ``$LAKD_CHECK_LABELS`` (off by default: the loaders validate every sample once)."""
    if explicit is not None:
        return bool(explicit)
    return os.environ.get(CHECK_LABELS_ENV, "0").strip().lower() in ("1", "true", "on", "yes")


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ValueError naming the first offending value if ``labels`` holds ids outside [0, num_classes)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if bool(bad.any()):
        value = int(labels[bad].flatten()[0])
        raise ValueError(
            f"label value {value} is out of range: expected class ids 0..{num_classes - 1} "
            f"or ignore_index {ignore_index}")


def fixed_codes(slots: int, code_dim: int = 1, value_range: tuple[float, float] = FIXED_CODE_RANGE) -> torch.Tensor:
    """Deterministic, evenly spaced codes, FloatTensor[slots, code_dim].

    code_dim = 1: linspace(lo, hi, slots) (for 22 slots exactly the official (k - 11) / 10).
    code_dim = k > 1: the first ``slots`` points, in row-major order, of the grid with n = ceil(slots^(1/k))
    evenly spaced values per axis over the same range, so the codes stay inside the range the teacher saw.
    """
    lo, hi = value_range
    if code_dim < 1:
        raise ValueError(f"code_dim must be >= 1 for fixed codes, got {code_dim}")
    if code_dim == 1:
        return torch.linspace(lo, hi, slots, dtype=torch.float64).float().unsqueeze(1)
    n = max(2, math.ceil(slots ** (1.0 / code_dim) - 1e-9))
    axis = torch.linspace(lo, hi, n, dtype=torch.float64)
    grid = torch.cartesian_prod(*([axis] * code_dim))  # [n^k, k], row-major
    return grid[:slots].float()


class LabelNoiser:
    """Noised label channels for label-assisted teachers.

    Args:
        num_classes: number of real classes C; ignore pixels use slot C (C + 1 slots in all).
        code_dim: channels of the code (k). 1 = official scalar code; 0 = no label channel (image-only model).
        sigma: std of the per-pixel noise during teacher training (official 0.03).
        fixed_sigma: std of the per-pixel noise with the fixed code (official 0.02).
        scale: multiplier applied to code + noise (official 100, for images that are mean-subtracted but not
            divided by the std; with std-normalised images see docs/method.md for the recommended value).
        ignore_index: label value of unlabeled pixels.
        check_labels: validate label values on every call (a host sync on a GPU); None = ``$LAKD_CHECK_LABELS``
            (off: the loaders validate every sample once).

    Every method takes labels LongTensor[B, H, W] and returns FloatTensor[B, code_dim, H, W] on the
    labels' device. ``generator`` (a torch.Generator on that device) makes the draws reproducible.
    """

    def __init__(self, num_classes: int, *, code_dim: int = 1, sigma: float = 0.03, fixed_sigma: float = 0.02,
                 scale: float = 100.0, ignore_index: int = IGNORE_INDEX, check_labels: bool | None = None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if int(code_dim) < 0:
            raise ValueError(f"code_dim must be >= 0, got {code_dim}")
        if sigma < 0 or fixed_sigma < 0:
            raise ValueError(f"noise std must be >= 0, got sigma={sigma}, fixed_sigma={fixed_sigma}")
        self.num_classes = int(num_classes)
        self.code_dim = int(code_dim)
        self.sigma = float(sigma)
        self.fixed_sigma = float(fixed_sigma)
        self.scale = float(scale)
        self.ignore_index = int(ignore_index)
        self.check_labels = label_checks_enabled(check_labels)
        self._fixed = fixed_codes(self.slots, self.code_dim) if self.code_dim > 0 else None
        self._fixed_on: dict = {}  # device -> the fixed table there (a host->GPU copy per step would sync)

    @property
    def slots(self) -> int:
        """Number of code slots: the classes plus one for ignore."""
        return self.num_classes + 1

    @property
    def channels(self) -> int:
        """Extra input channels this noiser produces (= code_dim)."""
        return self.code_dim

    def to_dict(self) -> dict:
        """The settings as JSON-ready dict (stored in a teacher export's meta under ``"label_noise"``)."""
        return {"num_classes": self.num_classes, "code_dim": self.code_dim, "sigma": self.sigma,
                "fixed_sigma": self.fixed_sigma, "scale": self.scale, "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, d: dict, num_classes: int | None = None) -> "LabelNoiser":
        """Inverse of ``to_dict`` (unknown keys are an error); ``num_classes`` fills in a dict without one."""
        d = dict(d)
        num_classes = d.pop("num_classes", num_classes)
        if num_classes is None:
            raise ValueError("label_noise settings lack 'num_classes'")
        allowed = {"code_dim", "sigma", "fixed_sigma", "scale", "ignore_index"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown label_noise setting(s): {', '.join(unknown)}")
        return cls(num_classes, **d)

    def __repr__(self) -> str:
        return (f"LabelNoiser(num_classes={self.num_classes}, code_dim={self.code_dim}, sigma={self.sigma}, "
                f"fixed_sigma={self.fixed_sigma}, scale={self.scale}, ignore_index={self.ignore_index})")

    # ------------------------------------------------------------------ helpers
    def slot_index(self, labels: torch.Tensor) -> torch.LongTensor:
        """Labels -> slot ids (ignore -> num_classes), LongTensor[B, H, W]; the values are validated only with
        ``check_labels`` (see the module docstring)."""
        if labels.dim() != 3:
            raise ValueError(f"labels must be [B, H, W], got shape {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if self.check_labels:
            check_labels(labels, self.num_classes, self.ignore_index)
        labels = labels.long()
        return torch.where(labels == self.ignore_index, torch.full_like(labels, self.num_classes), labels)

    def _paint(self, labels: torch.Tensor, table: torch.Tensor, sigma: float,
               generator: torch.Generator | None) -> torch.Tensor:
        """table: [B, slots, k] codes -> scale * (table[b, slot(p)] + N(0, sigma^2)) as [B, k, H, W]."""
        idx = self.slot_index(labels)
        b, h, w = idx.shape
        k = table.shape[-1]
        gathered = torch.gather(table, 1, idx.reshape(b, h * w, 1).expand(b, h * w, k))  # [B, HW, k]
        out = gathered.transpose(1, 2).reshape(b, k, h, w)
        if sigma > 0:
            out = out + sigma * torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return out * self.scale

    def _empty(self, labels: torch.Tensor) -> torch.Tensor:
        b, h, w = labels.shape
        return torch.zeros(b, 0, h, w, device=labels.device)

    # ------------------------------------------------------------------ modes
    def random(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher training: a fresh N(0, 1) code per image and slot, pixel noise ``sigma``, times ``scale``."""
        if self.code_dim == 0:
            self.slot_index(labels)
            return self._empty(labels)
        table = torch.randn(labels.shape[0], self.slots, self.code_dim, generator=generator,
                            device=labels.device, dtype=torch.float32)
        return self._paint(labels, table, self.sigma, generator)

    def fixed(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Distillation / privileged evaluation: the evenly spaced code, pixel noise ``fixed_sigma``."""
        if self.code_dim == 0:
            self.slot_index(labels)
            return self._empty(labels)
        fixed = self._fixed_on.get(labels.device)
        if fixed is None:
            fixed = self._fixed_on[labels.device] = self._fixed.to(labels.device)
        table = fixed.unsqueeze(0).expand(labels.shape[0], -1, -1).contiguous()
        return self._paint(labels, table, self.fixed_sigma, generator)

    def zeros(self, labels: torch.Tensor) -> torch.Tensor:
        """No privileged information: zeros in place of the label channel(s)."""
        if labels.dim() != 3:
            raise ValueError(f"labels must be [B, H, W], got shape {tuple(labels.shape)}")
        b, h, w = labels.shape
        return torch.zeros(b, self.code_dim, h, w, device=labels.device)

    def zeros_like_image(self, image: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like the label channels for an image FloatTensor[B, 3, H, W] (no label needed)."""
        b, _, h, w = image.shape
        return torch.zeros(b, self.code_dim, h, w, device=image.device, dtype=image.dtype)

    def apply(self, image: torch.Tensor, labels: torch.Tensor | None, mode: str,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """concat(image, channels) along dim 1 with mode in {"random", "fixed", "zeros"} (labels may be None
        for "zeros")."""
        if mode == "zeros":
            extra = self.zeros_like_image(image)
        elif mode == "random":
            extra = self.random(labels, generator)
        elif mode == "fixed":
            extra = self.fixed(labels, generator)
        else:
            raise ValueError(f"unknown label mode {mode!r}: expected random, fixed or zeros")
        if extra.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"label size {tuple(extra.shape[-2:])} differs from image size {tuple(image.shape[-2:])}")
        return torch.cat([image, extra.to(image.dtype)], dim=1)
