"""lakd.optim.build_optimizer: native fused/foreach optimizers and the optional NVIDIA apex path."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from lakd.optim import APEX_BUILD_HELP, ApexUnavailable, build_optimizer


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))


def _train(opt, model, steps=3):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8, generator=g)).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_native_matches_plain_torch_optimizer(name):
    a, b = _model(), _model()
    lr = 0.1 if name == "sgd" else 1e-3
    opt = build_optimizer(a.parameters(), name=name, lr=lr, momentum=0.9, weight_decay=1e-4)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")  # a multi-tensor / fused kernel
    if name == "sgd":
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
        ref = torch.optim.SGD(b.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, foreach=False)
    else:
        assert isinstance(opt, torch.optim.AdamW)
        ref = torch.optim.AdamW(b.parameters(), lr=lr, weight_decay=1e-4, foreach=False)
    for p, q in zip(_train(opt, a), _train(ref, b)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_native_param_groups_and_defaults():
    m = _model()
    groups = [{"params": list(m[0].parameters()), "lr": 0.01}, {"params": list(m[2].parameters())}]
    opt = build_optimizer(groups, lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert opt.defaults["weight_decay"] == 1e-4 and opt.defaults["momentum"] == 0.9


def test_bad_arguments():
    ps = list(_model().parameters())
    with pytest.raises(ValueError, match="name 'lamb'"):
        build_optimizer(ps, name="lamb", lr=0.1)
    with pytest.raises(ValueError, match="impl 'cuda'"):
        build_optimizer(ps, lr=0.1, impl="cuda")
    with pytest.raises(ValueError, match="lr"):
        build_optimizer(ps, lr=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        build_optimizer(ps, lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="empty"):
        build_optimizer([], lr=0.1)
    with pytest.raises(TypeError):
        build_optimizer(ps, 0.1)  # everything but params is keyword-only


def test_apex_missing_gives_build_instructions(monkeypatch):
    monkeypatch.setitem(sys.modules, "apex", None)  # `import apex` fails as if not installed
    with pytest.raises(ApexUnavailable) as info:
        build_optimizer(list(_model().parameters()), lr=0.1, impl="apex")
    msg = str(info.value)
    assert "github.com/NVIDIA/apex" in msg and "--no-build-isolation" in msg and "native" in msg
    assert APEX_BUILD_HELP in msg


def test_unrelated_pypi_apex_is_not_mistaken_for_nvidia_apex(monkeypatch):
    fake = types.ModuleType("apex")  # the PyPI `apex` has no apex.optimizers
    monkeypatch.setitem(sys.modules, "apex", fake)
    monkeypatch.delitem(sys.modules, "apex.optimizers", raising=False)
    with pytest.raises(ApexUnavailable, match="unrelated package"):
        build_optimizer(list(_model().parameters()), lr=0.1, impl="apex")


def _fake_apex(monkeypatch, fail=False):
    calls = {}

    class FusedSGD(torch.optim.SGD):
        def __init__(self, params, **kw):
            if fail:
                raise RuntimeError("apex.optimizers.FusedSGD requires cuda extensions")
            calls["sgd"] = kw
            super().__init__(params, **kw)

    class FusedAdam(torch.optim.AdamW):
        def __init__(self, params, adam_w_mode=True, **kw):
            calls["adam"] = dict(kw, adam_w_mode=adam_w_mode)
            super().__init__(params, **kw)

    apex = types.ModuleType("apex")
    optimizers = types.ModuleType("apex.optimizers")
    optimizers.FusedSGD, optimizers.FusedAdam = FusedSGD, FusedAdam
    apex.optimizers = optimizers
    monkeypatch.setitem(sys.modules, "apex", apex)
    monkeypatch.setitem(sys.modules, "apex.optimizers", optimizers)
    return calls, FusedSGD, FusedAdam


def test_apex_present_is_used(monkeypatch):
    calls, FusedSGD, FusedAdam = _fake_apex(monkeypatch)
    opt = build_optimizer(list(_model().parameters()), lr=0.02, weight_decay=5e-4, impl="apex")
    assert type(opt) is FusedSGD
    assert calls["sgd"] == {"lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
    opt = build_optimizer(list(_model().parameters()), name="adamw", lr=1e-3, impl="apex")
    assert type(opt) is FusedAdam and calls["adam"]["adam_w_mode"] is True


def test_apex_without_cuda_extensions(monkeypatch):
    _fake_apex(monkeypatch, fail=True)
    with pytest.raises(ApexUnavailable, match="unusable.*requires cuda extensions"):
        build_optimizer(list(_model().parameters()), lr=0.1, impl="apex")
