"""The training step reads nothing back from the device: label values are validated by the loader (once per
sample), not by the objectives, the noiser or the losses (on a GPU every such check is a host sync).

Without a GPU the host reads are counted with a TorchFunctionMode that sees every tensor -> Python conversion
(`bool(t)`, `int(t)`, `t.item()`, `t.tolist()`, `t.nonzero()`, boolean-mask indexing); with a GPU the same step
also runs under ``torch.cuda.set_sync_debug_mode("error")``."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lakd.method import label_noise
from lakd.method.label_noise import LabelNoiser
from lakd.method.objectives import StudentObjective, TeacherObjective
from lakd.models import build_model

C = 5
_HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "masked_select",
               "unique", "any_bool"}


class HostReads(TorchFunctionMode):
    """Records every call that hands a tensor's value to Python (a device->host sync on a GPU)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in _HOST_READS:
            self.calls.append(name)
        elif name == "__getitem__" and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool
                                           for a in _flat(args[1:])):
            self.calls.append("bool-mask indexing")
        return func(*args, **(kwargs or {}))


def _flat(items):
    for a in items:
        if isinstance(a, (tuple, list)):
            yield from _flat(a)
        else:
            yield a


def _batch(device="cpu"):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, C, (2, 32, 32), generator=g)
    label[:, :4] = 255
    return {"image": torch.randn(2, 3, 32, 32, generator=g).to(device), "label": label.to(device), "step": 3}


def _teacher_step(device="cpu", check=None):
    torch.manual_seed(0)
    noiser = LabelNoiser(C, scale=3.0, check_labels=check)
    model = build_model("deeplabv3", "resnet18", C, 3 + noiser.code_dim, width=0.125, aux=True).to(device)
    objective = TeacherObjective(noiser, dual_path=True, check_labels=check)  # 2 paths x (main + aux) CE + CWD
    return model, objective


def _student_step(device="cpu", check=None):
    torch.manual_seed(0)
    teacher = build_model("deeplabv3", "resnet18", C, 4, width=0.125, aux=True).to(device)
    model = build_model("pspnet", "resnet18", C, 3, width=0.125, aux=True).to(device)
    objective = StudentObjective(teacher, noiser=LabelNoiser(C, scale=3.0, check_labels=check), kd="cwd",
                                 check_labels=check)
    return model, objective


@pytest.mark.parametrize("make", [_teacher_step, _student_step], ids=["teacher", "student"])
def test_training_step_reads_nothing_back(make):
    model, objective = make()
    batch = _batch()
    with HostReads() as reads:
        out = objective(model, batch)
        out.loss.backward()
    assert reads.calls == [], f"host reads in the step: {reads.calls}"
    # the counter does see a check when one is asked for (so the zero above means something)
    model, objective = make(check=True)
    with HostReads() as reads:
        objective(model, batch).loss.backward()
    assert "__bool__" in reads.calls


def test_debug_flag_validates_once_per_micro_batch(monkeypatch):
    calls = []
    real = label_noise.check_labels
    monkeypatch.setattr(label_noise, "check_labels", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    from lakd.losses import reference

    ce_checks = []
    real_ce = reference.check_label_values
    monkeypatch.setattr(reference, "check_label_values", lambda *a, **k: (ce_checks.append(1), real_ce(*a, **k))[1])
    model, objective = _teacher_step()
    objective(model, _batch())
    assert (len(calls), len(ce_checks)) == (0, 0)  # default: no check in the step
    monkeypatch.setenv(label_noise.CHECK_LABELS_ENV, "1")
    noiser = LabelNoiser(C, scale=3.0, check_labels=False)  # the objective's flag alone
    TeacherObjective(noiser, dual_path=True)(model, _batch())
    assert (len(calls), len(ce_checks)) == (1, 0)  # once for the micro-batch, not per path and head
    bad = _batch()
    bad["label"][0, 9, 9] = C
    with pytest.raises(ValueError, match=f"label value {C} is out of range"):
        TeacherObjective(noiser, dual_path=True)(model, bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make", [_teacher_step, _student_step], ids=["teacher", "student"])
def test_cuda_step_does_not_synchronize(make):
    model, objective = make("cuda")
    batch = _batch("cuda")
    objective(model, batch).loss.backward()  # warm-up: cached index tables, cuDNN plans
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        objective(model, batch).loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
