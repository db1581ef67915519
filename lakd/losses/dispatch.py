"""The one dispatch point between the eager reference and the fused Triton kernels.

Rule: the fused Triton kernels run on CUDA tensors, the eager reference everywhere else. The environment
variable ``LAKD_LOSS_IMPL`` (or the ``impl=`` argument of each loss, which wins over it) forces a choice:

- ``auto`` (default): Triton when every tensor is on a CUDA device and Triton imports, else eager.
- ``eager``: always the eager reference.
- ``triton``: always the kernels; an error when Triton is missing, or when the tensors are on the CPU and the
  Triton interpreter is off (CPU tensors run the kernels only under ``TRITON_INTERPRET=1``, which must be set
  before ``triton`` is first imported - that is how CI checks the kernels without a GPU).
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

IMPLS = ("auto", "triton", "eager")
ENV_VAR = "LAKD_LOSS_IMPL"

_warned_fallback = False


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when Triton kernels will be run by the Triton interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def requested_impl(impl: str | None = None) -> str:
    """The implementation asked for: the ``impl`` argument, else ``$LAKD_LOSS_IMPL``, else ``auto``."""
    source = "impl" if impl is not None else ENV_VAR
    choice = impl if impl is not None else os.environ.get(ENV_VAR, "auto")
    choice = (choice or "auto").strip().lower()
    if choice not in IMPLS:
        raise ValueError(f"{source}={choice!r} is not a loss implementation; choose one of {', '.join(IMPLS)}")
    return choice


def select_impl(*tensors: torch.Tensor, impl: str | None = None) -> str:
    """Return ``"triton"`` or ``"eager"`` for a loss over ``tensors`` (see the module docstring)."""
    global _warned_fallback
    choice = requested_impl(impl)
    if choice == "eager":
        return "eager"
    on_cuda = all(t.is_cuda for t in tensors)
    if choice == "triton":
        if not triton_available():
            raise RuntimeError("LAKD_LOSS_IMPL=triton but the triton package is not installed "
                               "(pip install 'lakd[kernels]', or use LAKD_LOSS_IMPL=auto|eager)")
        if not on_cuda and not interpreter_enabled():
            devices = sorted({str(t.device) for t in tensors})
            raise RuntimeError(f"LAKD_LOSS_IMPL=triton needs CUDA tensors (got {', '.join(devices)}); on the CPU "
                               "the kernels only run under the Triton interpreter: set TRITON_INTERPRET=1 "
                               "before triton is imported")
        return "triton"
    # auto
    if on_cuda:
        if triton_available():
            return "triton"
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn("lakd.losses: triton is not installed, using the eager losses on CUDA", stacklevel=3)
    return "eager"
