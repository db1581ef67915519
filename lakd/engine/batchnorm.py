"""BatchNorm across processes.

On GPUs with several processes the model's BatchNorm layers become ``nn.SyncBatchNorm`` (batch statistics
over the global batch; running buffers then agree on every rank). SyncBatchNorm refuses CPU tensors, so on
CPU (gloo) every rank keeps plain BatchNorm with its own running statistics. DeepSpeed broadcasts
parameters, never buffers, so these statistics drift apart; before an evaluation, a checkpoint or an export
the floating-point buffers are averaged over the ranks (:func:`averaged_buffers`) so every rank evaluates and
saves the same model. Each rank's own buffers are put back afterwards (and stored in its per-rank
checkpoint file), so a resumed run continues exactly where an uninterrupted one would be.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn as nn


def use_sync_bn(setting, device: torch.device, world_size: int) -> bool:
    """``setting``: "auto" (SyncBatchNorm on GPUs with several processes), True or False."""
    if setting is False or world_size == 1:
        return False
    if device.type != "cuda":
        if setting is True:
            raise ValueError("train.sync_bn=true needs GPUs: torch's SyncBatchNorm refuses CPU tensors "
                             "(use sync_bn=auto: plain BatchNorm with buffers averaged across ranks)")
        return False
    return True


def convert_sync_bn(model: nn.Module) -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def float_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b for name, b in module.named_buffers() if b.is_floating_point()}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of this rank's floating-point buffers."""
    return {name: b.detach().clone() for name, b in float_buffers(module).items()}


def restore(module: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    own = float_buffers(module)
    missing = set(own) ^ set(saved)
    if missing:
        raise ValueError(f"buffer set differs from the saved one: {sorted(missing)[:5]}")
    with torch.no_grad():
        for name, b in own.items():
            b.copy_(saved[name].to(b.device, b.dtype))


def average_(module: nn.Module) -> None:
    """Replace every floating-point buffer by its mean over all ranks (one all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    bufs = list(float_buffers(module).values())
    if not bufs:
        return
    flat = torch.cat([b.detach().reshape(-1).double() for b in bufs])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    with torch.no_grad():
        offset = 0
        for b in bufs:
            n = b.numel()
            b.copy_(flat[offset:offset + n].view_as(b).to(b.dtype))
            offset += n


@contextlib.contextmanager
def averaged_buffers(module: nn.Module, enabled: bool):
    """Inside the block the buffers are the cross-rank average; afterwards each rank's own are back."""
    if not enabled:
        yield None
        return
    own = snapshot(module)
    average_(module)
    try:
        yield own
    finally:
        restore(module, own)


class RankBuffers:
    """This rank's own floating-point buffers as a part of a checkpoint, when they are averaged across ranks
    (plain BatchNorm on several processes): the engine's checkpoint holds the average, this part each rank's
    own running statistics. ``None`` (nothing to keep) otherwise."""

    def __init__(self, module: nn.Module, enabled: bool):
        self.module, self.enabled = module, bool(enabled)

    def state_dict(self):
        return snapshot(self.module) if self.enabled else None

    def load_state_dict(self, state) -> None:
        if state is not None:
            restore(self.module, state)
