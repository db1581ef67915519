"""Optimizer builder: native PyTorch (fused / foreach kernels) or NVIDIA apex's fused optimizers.

``build_optimizer(params, name="sgd", lr=..., impl="native")``

- ``impl="native"`` (default): ``torch.optim.SGD`` / ``torch.optim.AdamW`` with ``fused=True`` where PyTorch
  supports it for the parameters' device and dtypes, else ``foreach=True`` (multi-tensor kernels), else the
  plain loop.
- ``impl="apex"``: ``apex.optimizers.FusedSGD`` / ``FusedAdam(adam_w_mode=True)`` from NVIDIA apex. apex is
  optional and never a dependency of lakd (the PyPI package named ``apex`` is an unrelated project); asking for
  it when it is missing raises `ApexUnavailable`, which says how to build it.
"""
from __future__ import annotations

import math

import torch

from lakd.components import IMPLS, OPTIMIZERS  # torch-free: the config checks names against them

__all__ = ["build_optimizer", "ApexUnavailable", "OPTIMIZERS", "IMPLS", "APEX_BUILD_HELP"]

APEX_BUILD_HELP = (
    "NVIDIA apex is not a pip dependency of lakd (`pip install apex` installs an unrelated package). Build it "
    "from source against your CUDA build of torch (needs nvcc matching torch.version.cuda): "
    "`git clone https://github.com/NVIDIA/apex && cd apex && "
    "APEX_CPP_EXT=1 APEX_CUDA_EXT=1 pip install -v --no-build-isolation .`, or use an NGC PyTorch container "
    "(nvcr.io/nvidia/pytorch), which ships it. Otherwise set the optimizer impl to 'native' "
    "(torch's fused/foreach optimizers)."
)


class ApexUnavailable(RuntimeError):
    """impl='apex' was asked for, but NVIDIA apex's fused optimizers cannot be used here."""


def _param_list(params) -> list:
    """Materialise params (an iterable of tensors or of param-group dicts) into a list."""
    if isinstance(params, torch.Tensor):
        raise ValueError("params must be an iterable of tensors or param-group dicts, not a single tensor")
    items = list(params)
    if not items:
        raise ValueError("build_optimizer: got an empty parameter list")
    return items


def _tensors(items: list) -> list:
    out = []
    for item in items:
        if isinstance(item, dict):
            ps = item.get("params")
            out.extend([ps] if isinstance(ps, torch.Tensor) else list(ps))
        else:
            out.append(item)
    return out


def _check_hparams(name: str, impl: str, lr, momentum, weight_decay) -> tuple[str, str]:
    name, impl = str(name).lower(), str(impl).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name {name!r} is not one of {', '.join(OPTIMIZERS)}")
    if impl not in IMPLS:
        raise ValueError(f"optimizer impl {impl!r} is not one of {', '.join(IMPLS)}")
    for key, value, low in (("lr", lr, 0.0), ("momentum", momentum, 0.0), ("weight_decay", weight_decay, 0.0)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise ValueError(f"optimizer {key} must be a finite number >= {low}, got {value!r}")
    if lr <= 0:
        raise ValueError(f"optimizer lr must be > 0, got {lr}")
    return name, impl


def _native(cls, items: list, **kw) -> torch.optim.Optimizer:
    tensors = _tensors(items)
    devices = {t.device.type for t in tensors}
    floating = all(t.is_floating_point() for t in tensors)
    # fused kernels: CUDA (and other accelerators), and the CPU in recent torch; fall back when refused
    if floating and len(devices) == 1:
        try:
            return cls(items, fused=True, **kw)
        except (RuntimeError, ValueError, TypeError):
            pass
    try:
        return cls(items, foreach=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return cls(items, foreach=False, **kw)


def _apex(name: str, items: list, *, lr, momentum, weight_decay, nesterov, betas, eps):
    try:
        from apex.optimizers import FusedAdam, FusedSGD
    except ImportError as exc:
        raise ApexUnavailable(f"optimizer impl 'apex' needs NVIDIA apex, but apex.optimizers cannot be imported "
                              f"({exc}). {APEX_BUILD_HELP}") from exc
    try:
        if name == "sgd":
            return FusedSGD(items, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        return FusedAdam(items, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adam_w_mode=True)
    except RuntimeError as exc:  # apex built without its CUDA extensions (python-only install)
        raise ApexUnavailable(f"optimizer impl 'apex': NVIDIA apex is importable but its fused optimizers are "
                              f"unusable ({exc}). {APEX_BUILD_HELP}") from exc


def build_optimizer(params, *, name: str = "sgd", lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                    impl: str = "native", nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> torch.optim.Optimizer:
    """Build the optimizer for ``params`` (tensors or param-group dicts).

    ``name``: ``sgd`` (momentum, weight decay, optional nesterov; the LAD/CIRKD default) or ``adamw``
    (``betas``, ``eps``; ``momentum`` unused). ``impl``: ``native`` or ``apex`` (see the module docstring).
    Raises ValueError for bad names or hyper-parameters, `ApexUnavailable` when apex is asked for but missing.
    """
    name, impl = _check_hparams(name, impl, lr, momentum, weight_decay)
    items = _param_list(params)
    if impl == "apex":
        return _apex(name, items, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                     betas=betas, eps=eps)
    if name == "sgd":
        return _native(torch.optim.SGD, items, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       nesterov=nesterov)
    return _native(torch.optim.AdamW, items, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
