"""Loss composition of the teacher and student objectives: terms, weights, stop-gradient, single path,
frozen teacher inputs, resizing, baseline."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd import IGNORE_INDEX
from lakd.losses import reference as R
from lakd.method.label_noise import LabelNoiser
from lakd.method.objectives import (StudentObjective, TeacherObjective, consistency_loss, model_label_channels,
                                    unpack_output)

C = 4


class Stub(nn.Module):
    """Tiny deterministic segmentor (no BatchNorm): 3x3 conv -> pool to 1/stride; records its inputs."""

    def __init__(self, in_channels, stride=2, aux=True):
        super().__init__()
        torch.manual_seed(in_channels * 10 + stride)
        self.conv = nn.Conv2d(in_channels, C, 3, padding=1)
        self.aux_conv = nn.Conv2d(in_channels, C, 1) if aux else None
        self.stride = stride
        self.config = {"in_channels": in_channels}
        self.inputs, self.grad_enabled, self.training_flags = [], [], []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        self.grad_enabled.append(torch.is_grad_enabled())
        self.training_flags.append(self.training)
        main = F.avg_pool2d(self.conv(x), self.stride)
        aux = F.avg_pool2d(self.aux_conv(x), self.stride) if self.aux_conv is not None else None
        return {"logits": main, "aux_logits": aux}


def _batch(b=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, C, (b, h, w), generator=g)
    label[:, 0, :] = IGNORE_INDEX
    return {"image": torch.randn(b, 3, h, w, generator=g), "label": label}


def _recompute_teacher(model, inputs, label, aux_w, cons_w, T, dual=True):
    """The official teacher loss from the recorded path inputs (reference functions, fresh graph)."""
    outs = [model(x) for x in list(inputs)]
    ce = sum(R.upsample_cross_entropy(o["logits"], label) for o in outs)
    aux = sum(R.upsample_cross_entropy(o["aux_logits"], label) for o in outs)
    loss = ce + aux_w * aux
    if dual:
        z1, z2 = outs[0]["logits"], outs[1]["logits"]
        loss = loss + cons_w * (R.cwd(z1, z2.detach(), T) + R.cwd(z2, z1.detach(), T))
    return loss


def test_teacher_dual_path_terms_weights_and_gradients():
    model = Stub(4)
    batch = _batch()
    obj = TeacherObjective(LabelNoiser(C), generator=torch.Generator().manual_seed(1))
    out = obj(model, batch)
    assert set(out.terms) == {"ce", "aux_ce", "consistency"}
    assert out.weights == {"ce": 1.0, "aux_ce": 0.4, "consistency": 5.0}
    assert all(not t.requires_grad for t in out.terms.values())
    assert out.loss.item() == pytest.approx(sum(out.weights[k] * out.terms[k].item() for k in out.terms), rel=1e-6)
    # two forwards of the same image with two different noisings of the same label
    x1, x2 = model.inputs
    assert torch.equal(x1[:, :3], batch["image"]) and torch.equal(x2[:, :3], batch["image"])
    assert x1.shape[1] == 4 and not torch.allclose(x1[:, 3], x2[:, 3])
    # the loss and its gradients equal the official formula computed by hand
    out.loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = _recompute_teacher(model, [x1, x2], batch["label"], 0.4, 5.0, 4.0)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    ref.backward()
    for g, p in zip(got, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6, rtol=1e-4)


def test_single_path_is_one_switch():
    model = Stub(4)
    obj = TeacherObjective(LabelNoiser(C), dual_path=False)
    out = obj(model, _batch())
    assert len(model.inputs) == 1
    assert set(out.terms) == {"ce", "aux_ce"}
    ref = _recompute_teacher(model, model.inputs, _batch()["label"], 0.4, 5.0, 4.0, dual=False)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["cwd", "kl", "mse"])
def test_consistency_stop_gradient_stops_gradients(kind):
    torch.manual_seed(0)
    a = torch.randn(2, C, 3, 3, requires_grad=True)
    b = torch.randn(2, C, 3, 3, requires_grad=True)
    consistency_loss(kind, a, b, 4.0).backward()
    half = {"cwd": lambda s, t: R.cwd(s, t, 4.0), "kl": lambda s, t: R.pixel_kd(s, t, 4.0),
            "mse": lambda s, t: F.mse_loss(s, t)}[kind]
    # d/da only through the half where a is the student (b's half treats a as a constant target)
    a2 = a.detach().clone().requires_grad_(True)
    half(a2, b.detach()).backward()
    assert torch.allclose(a.grad, a2.grad, atol=1e-6)
    b2 = b.detach().clone().requires_grad_(True)
    half(b2, a.detach()).backward()
    assert torch.allclose(b.grad, b2.grad, atol=1e-6)
    # without the stop-gradient the gradient would differ
    a3, b3 = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    if kind == "mse":
        (F.mse_loss(a3, b3) * 2).backward()
    else:
        full = {"cwd": R.cwd, "kl": R.pixel_kd}[kind]
        # a differentiable copy of the formula with no detach on the target
        p = lambda s, t: full(s, t, 4.0)  # noqa: E731 (reference detaches t; build the no-sg version by hand)
        log_t = F.log_softmax((b3.flatten(2) if kind == "cwd" else b3) / 4.0, dim=2 if kind == "cwd" else 1)
        log_s = F.log_softmax((a3.flatten(2) if kind == "cwd" else a3) / 4.0, dim=2 if kind == "cwd" else 1)
        (log_t.exp() * (log_t - log_s)).sum().backward()
        del p
    assert not torch.allclose(a.grad, a3.grad, atol=1e-6)


def test_consistency_is_zero_for_identical_paths_and_options_switch():
    z = torch.randn(2, C, 3, 3)
    for kind in ("cwd", "kl", "mse"):
        assert consistency_loss(kind, z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    out = TeacherObjective(LabelNoiser(C), consistency="none")(Stub(4), _batch())
    assert "consistency" not in out.terms
    out = TeacherObjective(LabelNoiser(C), consistency="mse", consistency_weight=2.0)(Stub(4), _batch())
    assert out.weights["consistency"] == 2.0
    with pytest.raises(ValueError, match="consistency"):
        TeacherObjective(LabelNoiser(C), consistency="l1")


def test_consistency_warmup_and_label_dropout():
    obj = TeacherObjective(LabelNoiser(C), consistency_warmup=10)
    b = _batch()
    assert obj(Stub(4), b, step=0).weights["consistency"] == 0.0
    assert obj(Stub(4), b, step=5).weights["consistency"] == pytest.approx(2.5)
    assert obj(Stub(4), b, step=50).weights["consistency"] == 5.0
    assert obj(Stub(4), {**b, "step": 50}, step=0).weights["consistency"] == 0.0  # the argument, not the batch
    counted = TeacherObjective(LabelNoiser(C), consistency_warmup=2)  # no step: the objective counts calls
    assert [counted(Stub(4), b).weights["consistency"] for _ in range(3)] == [0.0, 2.5, 5.0]
    model = Stub(4)
    TeacherObjective(LabelNoiser(C), label_dropout=1.0)(model, b)
    assert all(not x[:, 3:].any() for x in model.inputs)


def test_teacher_k_dim_codes_feed_k_channels():
    model = Stub(3 + 3)
    TeacherObjective(LabelNoiser(C, code_dim=3))(model, _batch())
    assert all(x.shape[1] == 6 for x in model.inputs)


def test_bad_labels_and_shapes_are_named():
    obj = TeacherObjective(LabelNoiser(C), check_labels=True)  # the debug checks (off by default)
    b = _batch()
    b["label"][0, 3, 3] = 9
    with pytest.raises(ValueError, match="9"):
        obj(Stub(4), b)
    with pytest.raises(ValueError, match="match"):
        obj(Stub(4), {"image": torch.randn(2, 3, 8, 8), "label": torch.zeros(2, 6, 8, dtype=torch.long)})
    with pytest.raises(ValueError, match="9"):
        StudentObjective(None, check_labels=True)(Stub(3), b)


def test_student_with_label_assisted_teacher():
    teacher = Stub(4, stride=4)  # coarser logits than the student's: resized to the student's size
    teacher.train()
    noiser = LabelNoiser(C, fixed_sigma=0.0)
    obj = StudentObjective(teacher, noiser=noiser)
    assert obj.teacher_label_channels == 1 and not any(p.requires_grad for p in teacher.parameters())
    student = Stub(3)
    batch = _batch()
    out = obj(student, batch)
    assert set(out.terms) == {"ce", "aux_ce", "kd"}
    assert out.weights == {"ce": 1.0, "aux_ce": 0.02, "kd": 3.0}
    # the teacher ran frozen: eval mode, no grad, fed image + the fixed label code
    assert teacher.grad_enabled == [False] and teacher.training_flags == [False]
    tx = teacher.inputs[0]
    assert torch.equal(tx[:, :3], batch["image"])
    assert torch.allclose(tx[:, 3:], noiser.fixed(batch["label"]))
    assert student.inputs[0].shape[1] == 3
    # loss = official formula
    s = student(batch["image"])
    t = F.interpolate(teacher(tx)["logits"], size=s["logits"].shape[-2:], mode="bilinear", align_corners=True)
    ref = (R.upsample_cross_entropy(s["logits"], batch["label"]) + 0.02 * R.upsample_cross_entropy(
        s["aux_logits"], batch["label"]) + 3.0 * R.cwd(s["logits"], t, 4.0))
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_student_vanilla_kd_pixel_and_baseline_share_one_path():
    batch = _batch()
    teacher = Stub(3)  # image-only teacher: fed the image alone
    obj = StudentObjective(teacher, kd="pixel", kd_weight=1.5, temperature=2.0)
    student = Stub(3)
    out = obj(student, batch)
    assert teacher.inputs[0].shape[1] == 3
    s = student(batch["image"])
    t = teacher(batch["image"])["logits"]
    assert out.terms["kd"].item() == pytest.approx(R.pixel_kd(s["logits"], t, 2.0).item(), rel=1e-5)
    assert out.weights["kd"] == 1.5
    base = StudentObjective(None)(Stub(3), batch)
    assert set(base.terms) == {"ce", "aux_ce"}
    # an official-style 4-channel student gets a zero label channel
    s4 = Stub(4)
    StudentObjective(None)(s4, batch)
    assert s4.inputs[0].shape[1] == 4 and not s4.inputs[0][:, 3].any()


def test_student_needs_a_matching_noiser_for_a_label_teacher():
    with pytest.raises(ValueError, match="LabelNoiser"):
        StudentObjective(Stub(4))
    with pytest.raises(ValueError, match="code_dim"):
        StudentObjective(Stub(5), noiser=LabelNoiser(C))
    with pytest.raises(ValueError, match="kd"):
        StudentObjective(Stub(3), kd="feature")


def test_unpack_and_label_channels_helpers():
    t = torch.zeros(1)
    assert unpack_output(t) == (t, None)
    assert unpack_output((t, t))[1] is t
    assert model_label_channels(Stub(5)) == 2 and model_label_channels(nn.Conv2d(3, 3, 1)) == 0


def test_real_model_smoke():
    from lakd.models import build_model

    teacher = build_model("fcn", "resnet18", C, in_channels=4, width=0.125)
    out = TeacherObjective(LabelNoiser(C))(teacher, _batch(h=32, w=32))
    out.loss.backward()
    student = build_model("fcn", "resnet18", C, width=0.125)
    out = StudentObjective(teacher, noiser=LabelNoiser(C))(student, _batch(h=32, w=32))
    assert set(out.terms) == {"ce", "aux_ce", "kd"} and torch.isfinite(out.loss)
