"""Training objectives of LAD: the dual-path label-assisted teacher and the distilled student.

Both are callables ``objective(model, batch, step=None) -> LossOutput`` with ``batch = {"image":
FloatTensor[B,3,H,W], "label": LongTensor[B,H,W]}`` and ``step`` the optimizer steps done so far (the engine
passes it; schedules inside an objective read it). They hold no distributed code: the engine wraps the model (e.g. in a DeepSpeed
engine), calls the objective and back-propagates ``LossOutput.loss``.

Teacher (official LAD, docs/method.md):

    L_T = sum_{i=1,2} [CE(z^i, y) + 0.4 CE(z^i_aux, y)] + 5 [CWD(z^1, sg z^2) + CWD(z^2, sg z^1)],  T = 4

where z^1, z^2 are the main logits of the same image with two independent label noisings, forwarded through
the same weights. ``dual_path=False`` is the single-path ablation (one noising, no consistency term).

Student (also vanilla KD from an image-only teacher, and the plain baseline with ``teacher=None``):

    L_S = CE(z_s, y) + 0.02 CE(z_s_aux, y) + 3 CWD(z_s, z_t),  T = 4

The frozen teacher runs under no_grad in eval mode and is fed the image plus the fixed label code when it
takes label channels, the image alone otherwise.

Label values are not validated in the step (the loaders do it once per sample; on a GPU each check is a host
sync): ``check_labels=True`` or ``LAKD_CHECK_LABELS=1`` turns the checks back on for debugging.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd import IGNORE_INDEX
from lakd.components import CONSISTENCY_KINDS, KD_KINDS  # torch-free: the config checks names against them
from lakd.method.label_noise import LabelNoiser, label_checks_enabled


@dataclass
class LossOutput:
    """``loss`` = sum(weights[k] * terms[k]); ``terms`` are the unweighted, detached scalar terms (for logs)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    weights: dict[str, float] = field(default_factory=dict)


def _losses():
    # imported lazily: lakd.losses dispatches to Triton kernels on CUDA tensors and to eager code elsewhere
    import lakd.losses as losses

    return losses


def unpack_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(main logits, aux logits or None) from a SegOutput, a dict, a tuple/list (official order) or a tensor."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, dict):
        return out["logits"], out.get("aux_logits")
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None)
    return out.logits, getattr(out, "aux_logits", None)


def model_label_channels(model: nn.Module, image_channels: int = 3) -> int:
    """Extra (label) input channels a model takes: ``in_channels - 3`` from its config, 0 when unknown."""
    module = getattr(model, "module", model)  # DeepSpeed / DDP wrappers
    config = getattr(module, "config", None)
    if isinstance(config, dict) and "in_channels" in config:
        return max(0, int(config["in_channels"]) - image_channels)
    return 0


def check_batch(batch: dict, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX) -> None:
    """Shapes of image [B,3,H,W] and label [B,H,W] must agree; label values must be valid when num_classes."""
    image, label = batch["image"], batch["label"]
    if image.dim() != 4 or label.dim() != 3:
        raise ValueError(f"expected image [B,C,H,W] and label [B,H,W], got {tuple(image.shape)} and "
                         f"{tuple(label.shape)}")
    if image.shape[0] != label.shape[0] or image.shape[-2:] != label.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and label {tuple(label.shape)} do not match in batch or size")
    if num_classes is not None:
        from lakd.method.label_noise import check_labels

        check_labels(label, num_classes, ignore_index)


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=True, as the reference code) resize of logits to ``size`` if it differs."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def consistency_loss(kind: str, a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric distance between two paths' logits with stop-gradient on the target side of each half."""
    L = _losses()
    a, b = a.float(), b.float()
    if kind == "cwd":
        return L.cwd_symmetric(a, b, temperature)
    if kind == "kl":
        return L.pixel_kd(a, b.detach(), temperature) + L.pixel_kd(b, a.detach(), temperature)
    if kind == "mse":
        return F.mse_loss(a, b.detach()) + F.mse_loss(b, a.detach())
    raise ValueError(f"unknown consistency {kind!r}: expected one of {', '.join(CONSISTENCY_KINDS)}")


def ramp(step: int | None, warmup: int) -> float:
    """A linear ramp 0 -> 1 over the first ``warmup`` steps (1 when the step is unknown or there is none)."""
    if step is None or warmup <= 0:
        return 1.0
    return min(1.0, max(0.0, float(step) / float(warmup)))


class TeacherObjective:
    """Dual-path label-assisted teacher objective.

    Args:
        noiser: the LabelNoiser producing the label channel(s) (``noiser.random`` per path).
        aux_weight: weight of the auxiliary-head CE on each path (official 0.4).
        consistency: "cwd" (official), "kl" (pixel-wise KL), "mse" (on logits) or "none".
        consistency_weight: lambda_c (official 5).
        temperature: T of the CWD / KL consistency (official 4).
        dual_path: False = single-path ablation (one noising, no consistency term).
        consistency_warmup: ramp lambda_c linearly from 0 over this many steps (0 = official, no ramp).
            The step is the ``step`` argument of the call, else the objective's own call counter.
        label_dropout: probability per image that its label channels are zeroed (0 = official). Teaches the
            teacher to work without the label too, so a zero-channel evaluation is meaningful.
        ignore_index: unlabeled pixels, excluded from CE.
        check_labels: validate label values in every step (debugging; a host sync per check on a GPU);
            None = ``$LAKD_CHECK_LABELS`` (off).
    """

    def __init__(self, noiser: LabelNoiser, *, aux_weight: float = 0.4, consistency: str = "cwd",
                 consistency_weight: float = 5.0, temperature: float = 4.0, dual_path: bool = True,
                 consistency_warmup: int = 0, label_dropout: float = 0.0,
                 ignore_index: int = IGNORE_INDEX,
                 generator: torch.Generator | None = None, check_labels: bool | None = None):
        if consistency not in CONSISTENCY_KINDS:
            raise ValueError(f"unknown consistency {consistency!r}: expected one of {', '.join(CONSISTENCY_KINDS)}")
        if not 0.0 <= label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1], got {label_dropout}")
        self.noiser = noiser
        self.aux_weight = float(aux_weight)
        self.consistency = consistency
        self.consistency_weight = float(consistency_weight)
        self.temperature = float(temperature)
        self.dual_path = bool(dual_path)
        self.consistency_warmup = int(consistency_warmup)
        self.label_dropout = float(label_dropout)
        self.ignore_index = int(ignore_index)
        self.generator = generator
        self.check_labels = label_checks_enabled(check_labels)
        self.calls = 0

    @property
    def paths(self) -> int:
        return 2 if self.dual_path else 1

    def noised_input(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """concat(image, one fresh random noising of ``label``), with label dropout applied per image."""
        extra = self.noiser.random(label, self.generator).to(image.dtype)
        if self.label_dropout > 0:
            keep = torch.rand(image.shape[0], device=image.device, generator=self.generator) >= self.label_dropout
            extra = extra * keep.to(extra.dtype).view(-1, 1, 1, 1)
        return torch.cat([image, extra], dim=1)

    def __call__(self, model: nn.Module, batch: dict, step: int | None = None) -> LossOutput:
        L = _losses()
        check = self.check_labels
        check_batch(batch, self.noiser.num_classes if check else None, self.ignore_index)
        image, label = batch["image"], batch["label"]
        step = self.calls if step is None else step
        self.calls += 1
        ce = aux = image.new_zeros((), dtype=torch.float32)
        mains = []
        for _ in range(self.paths):
            main, aux_logits = unpack_output(model(self.noised_input(image, label)))
            mains.append(main)
            # labels were validated above when asked to (once, not per path and head)
            ce = ce + L.upsample_cross_entropy(main.float(), label, ignore_index=self.ignore_index,
                                               check_labels=False)
            if aux_logits is not None and self.aux_weight > 0:
                aux = aux + L.upsample_cross_entropy(aux_logits.float(), label, ignore_index=self.ignore_index,
                                                     check_labels=False)
        terms = {"ce": ce, "aux_ce": aux}
        weights = {"ce": 1.0, "aux_ce": self.aux_weight}
        if self.dual_path and self.consistency != "none":
            terms["consistency"] = consistency_loss(self.consistency, mains[0], mains[1], self.temperature)
            weights["consistency"] = self.consistency_weight * ramp(step, self.consistency_warmup)
        loss = sum(weights[k] * terms[k] for k in terms)
        return LossOutput(loss, {k: v.detach() for k, v in terms.items()}, weights)


class StudentObjective:
    """Student objective: CE + aux CE + distillation from a frozen teacher (or none: the plain baseline).

    Args:
        teacher: frozen teacher model (any architecture), or None for plain supervised training.
        noiser: builds the teacher's label channels (``noiser.fixed``) when the teacher takes them; required
            then. Its ``code_dim`` must equal the teacher's label channels.
        teacher_label_channels: extra channels the teacher takes; read from ``teacher.config`` when None.
        teacher_label_mode: "fixed" (official) or "zeros" (teacher without its label, for ablations).
        student_label_channels: zero channels appended to the student's image (the official student is a
            4-channel net fed zeros); read from ``model.config`` when None.
        aux_weight: student aux CE weight (official 0.02).
        kd: "cwd" (official, channel-wise), "pixel" (pixel-wise KL over classes) or "none".
        kd_weight: official 3.  temperature: official 4.
        check_labels: validate label values in every step (debugging; a host sync per check on a GPU);
            None = ``$LAKD_CHECK_LABELS`` (off).
    """

    def __init__(self, teacher: nn.Module | None = None, *, noiser: LabelNoiser | None = None,
                 teacher_label_channels: int | None = None, teacher_label_mode: str = "fixed",
                 student_label_channels: int | None = None, aux_weight: float = 0.02, kd: str = "cwd",
                 kd_weight: float = 3.0, temperature: float = 4.0, ignore_index: int = IGNORE_INDEX,
                 generator: torch.Generator | None = None,
                 teacher_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 check_labels: bool | None = None):
        if kd not in KD_KINDS:
            raise ValueError(f"unknown kd {kd!r}: expected one of {', '.join(KD_KINDS)}")
        if teacher_label_mode not in ("fixed", "zeros"):
            raise ValueError(f"teacher_label_mode must be fixed or zeros, got {teacher_label_mode!r}")
        self.teacher = teacher
        self.noiser = noiser
        self.aux_weight = float(aux_weight)
        self.kd = kd if teacher is not None else "none"
        self.kd_weight = float(kd_weight)
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)
        self.generator = generator
        self.teacher_label_mode = teacher_label_mode
        self.student_label_channels = student_label_channels
        self.teacher_input = teacher_input
        self.check_labels = label_checks_enabled(check_labels)
        self.teacher_label_channels = 0
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
            self.teacher_label_channels = (model_label_channels(teacher) if teacher_label_channels is None
                                           else int(teacher_label_channels))
            if self.teacher_label_channels > 0 and teacher_input is None:
                if noiser is None:
                    raise ValueError("the teacher takes label channels: StudentObjective needs a LabelNoiser")
                if noiser.code_dim != self.teacher_label_channels:
                    raise ValueError(f"noiser.code_dim={noiser.code_dim} but the teacher takes "
                                     f"{self.teacher_label_channels} label channel(s)")

    def teacher_logits(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Main logits of the frozen teacher (no_grad, eval mode), fed its label code if it takes one."""
        self.teacher.eval()
        with torch.no_grad():
            if self.teacher_input is not None:
                x = self.teacher_input(image, label)
            elif self.teacher_label_channels > 0:
                extra = (self.noiser.fixed(label, self.generator) if self.teacher_label_mode == "fixed"
                         else self.noiser.zeros(label))
                x = torch.cat([image, extra.to(image.dtype)], dim=1)
            else:
                x = image
            return unpack_output(self.teacher(x))[0].detach()

    def student_input(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        k = self.student_label_channels
        if k is None:
            k = model_label_channels(model)
        if k <= 0:
            return image
        b, _, h, w = image.shape
        return torch.cat([image, image.new_zeros(b, k, h, w)], dim=1)

    def __call__(self, model: nn.Module, batch: dict, step: int | None = None) -> LossOutput:
        """``step`` is accepted for the engine's one calling convention; nothing in this objective depends on it."""
        L = _losses()
        check = self.check_labels
        check_batch(batch)
        image, label = batch["image"], batch["label"]
        main, aux_logits = unpack_output(model(self.student_input(model, image)))
        terms = {"ce": L.upsample_cross_entropy(main.float(), label, ignore_index=self.ignore_index,
                                                check_labels=check)}
        weights = {"ce": 1.0}
        if aux_logits is not None and self.aux_weight > 0:
            terms["aux_ce"] = L.upsample_cross_entropy(aux_logits.float(), label, ignore_index=self.ignore_index,
                                                       check_labels=False)  # the main CE checked them
            weights["aux_ce"] = self.aux_weight
        if self.teacher is not None and self.kd != "none":
            t = resize_logits(self.teacher_logits(image, label).float(), tuple(main.shape[-2:]))
            if t.shape[1] != main.shape[1]:
                raise ValueError(f"teacher predicts {t.shape[1]} classes, student {main.shape[1]}")
            fn = L.cwd if self.kd == "cwd" else L.pixel_kd
            terms["kd"] = fn(main.float(), t, self.temperature)
            weights["kd"] = self.kd_weight
        loss = sum(weights[k] * terms[k] for k in terms)
        return LossOutput(loss, {k: v.detach() for k, v in terms.items()}, weights)
