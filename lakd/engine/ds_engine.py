"""One DeepSpeed engine per trained model, built from the typed config.

- batch: ``train.batch_size`` is the global batch; per process ``micro_batch_size`` x ``grad_accum``
  (:func:`lakd.config.batch_layout`), so the hyper-parameters do not change with the process count;
- optimizer: SGD (momentum, weight decay; ``lakd.optim.build_optimizer``) with the poly schedule as a
  closed-form ``LambdaLR`` (the learning rate is a pure function of the step, so a weights-only resume on a
  different world size lands on the right value);
- ``gradient_clipping``; ZeRO stage 0, 1 or 2 (stage 3 is refused: see ``lakd.config``);
- precision: ``bf16`` = DeepSpeed's ``torch_autocast`` block (parameters, BatchNorm and gradient
  communication stay fp32). DeepSpeed's own ``bf16`` block casts BatchNorm weights but not its buffers and
  breaks BN models, so it is never used. ``fp16`` = DeepSpeed's ``fp16`` block with dynamic loss scaling;
- ``train.deepspeed``: a user's DeepSpeed JSON merged over lakd's config (monitors, ZeRO buckets, fp16 loss
  scaling, ...); keys that would change lakd's invariants (batch layout, clipping, ZeRO stage, precision,
  optimizer, scheduler) are refused naming the lakd setting to use. The resolved config is written to
  ``<stage dir>/deepspeed_config.json``.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from lakd.config import Config
from lakd.log import quiet_deepspeed


def prepare_deepspeed(device: torch.device) -> None:
    """Process-wide DeepSpeed set-up before its first import: accelerator, log level, no CPU JIT op.

    On CPU DeepSpeed's communication layer JIT-compiles a shared-memory all-reduce op with gcc on first use
    (~100 s, cached in ~/.cache/torch_extensions; set LAKD_DS_SHM_OP=1 to allow it). It only serves
    DeepSpeed's inference all-reduce, which training never calls, so lakd marks it unavailable: a cold
    machine starts training in seconds.
    """
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    import deepspeed.ops

    quiet_deepspeed()
    if device.type == "cpu" and os.environ.get("LAKD_DS_SHM_OP", "0") != "1":
        # `deepspeed.ops.__compatible_ops__` is computed on first access by compiling probe programs for
        # every op (seconds, and linker errors on stderr where libaio is missing); its only reader is the
        # shm-op check. Seed it instead, with that op marked unavailable.
        if "__compatible_ops__" in vars(deepspeed.ops):
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        else:
            vars(deepspeed.ops)["__compatible_ops__"] = {"deepspeed_shm_comm": False}


def poly_factor(cfg: Config) -> Callable[[int], float]:
    """Learning-rate multiplier of step k: ``(min_lr + (lr - min_lr) (1 - k/iters)^power) / lr``, times a
    linear warm-up ``(k + 1) / warmup_iters`` for the first ``warmup_iters`` steps."""
    o, iters = cfg.optim, cfg.train.iters
    base, floor, power, warm = o.lr, o.min_lr, o.poly_power, o.warmup_iters

    def factor(step: int) -> float:
        progress = min(max(step, 0), iters) / iters
        lr = floor + (base - floor) * (1.0 - progress) ** power
        if warm > 0 and step < warm:
            lr *= (step + 1) / warm
        return lr / base

    return factor


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    from lakd.config import ConfigError
    from lakd.optim import ApexUnavailable, build_optimizer as build

    o = cfg.optim
    try:
        return build(model.parameters(), name=o.name, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                     impl=o.impl, nesterov=o.nesterov, betas=tuple(o.betas), eps=o.eps)
    except ApexUnavailable as exc:
        raise ConfigError(f"config key 'optim.impl': {exc}") from None


def deepspeed_config(cfg: Config, world_size: int, micro: int, accum: int) -> dict:
    """lakd's own DeepSpeed config (before a user's ``train.deepspeed`` file is merged over it)."""
    t = cfg.train
    ds = {
        "train_batch_size": micro * accum * world_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": float(t.grad_clip),
        "zero_optimization": {"stage": int(t.zero_stage)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "checkpoint": {"tag_validation": "Ignore"},  # lakd validates tags itself (one tag per step)
    }
    if t.precision == "bf16":
        # empty list: no module communicates its gradients in bf16 (fp32 all-reduce, exact sums)
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    elif t.precision == "fp16":
        # ZeRO stage 0 with fp16 is refused when the config is loaded (lakd.config TrainConfig)
        # DeepSpeed's fp16 block: fp16 weights with fp32 master copies, dynamic loss scaling (loss_scale 0);
        # auto_cast casts the float32 batches to fp16 on their way into the model
        ds["fp16"] = {"enabled": True, "auto_cast": True, "loss_scale": 0, "initial_scale_power": 16,
                      "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
        # the block casts parameters only: BatchNorm's running statistics must follow, as with module.half()
        ds["data_types"] = {"buffer_dtype": "fp16"}
    return ds


# keys of a user's DeepSpeed file that must keep lakd's value (the lakd config key that sets them, or why)
INVARIANTS = {
    "train_batch_size": "train.batch_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.batch_size and train.micro_batch_size",
    "gradient_clipping": "train.grad_clip",
    "zero_optimization.stage": "train.zero_stage",
    "fp16.enabled": "train.precision",
    "fp16.auto_cast": "train.precision (lakd feeds float32 batches)",
    "data_types.buffer_dtype": "train.precision",
    "torch_autocast.enabled": "train.precision",
    "torch_autocast.dtype": "train.precision",
    "zero_allow_untested_optimizer": "nothing: lakd hands DeepSpeed its own optimizer",
    "checkpoint.tag_validation": "nothing: lakd checks checkpoint tags itself",
}
# whole sections lakd provides itself
OWNED = {
    "optimizer": "lakd builds the optimizer from optim.* and hands it to DeepSpeed",
    "scheduler": "lakd builds the poly schedule from optim.* and hands it to DeepSpeed",
    "bf16": "DeepSpeed's bf16 block breaks BatchNorm models (it casts their weights, not their buffers); "
            "train.precision=bf16 uses its torch_autocast block instead",
}


def read_user_config(path: str) -> dict:
    """A user's DeepSpeed JSON file (data only). Raises ConfigError naming the file."""
    import json

    from lakd.config import ConfigError

    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except OSError as exc:
        raise ConfigError(f"config key 'train.deepspeed': cannot read {path} ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"config key 'train.deepspeed': {path} is not a JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config key 'train.deepspeed': {path} must hold a JSON object")
    return doc


def _leaves(d: dict, prefix: str = ""):
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _lookup(d: dict, path: str):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def merge_user_config(base: dict, user: dict, source: str) -> dict:
    """``user`` merged over ``base`` (mappings key by key); a key that would change one of lakd's invariants
    raises ConfigError naming the key and the lakd setting to use instead."""
    from lakd.config import ConfigError, merge

    for key, why in OWNED.items():
        if key in user and not (key == "bf16" and not _lookup(user, "bf16.enabled")):
            raise ConfigError(f"config key 'train.deepspeed': {source} sets '{key}', which lakd does not allow: "
                              f"{why}")
    for path, value in _leaves(user):
        if path not in INVARIANTS:
            continue
        ours = _lookup(base, path)
        if ours is None and path.endswith(".enabled"):
            ours = False
        if value != ours:
            raise ConfigError(f"config key 'train.deepspeed': {source} sets '{path}' to {value!r}, lakd's value is "
                              f"{ours!r} (set by {INVARIANTS[path]}); remove it from the file")
    return merge(base, user)


def resolved_deepspeed_config(cfg: Config, world_size: int, micro: int, accum: int) -> dict:
    """What ``deepspeed.initialize`` gets: lakd's config with ``train.deepspeed`` merged over it."""
    ds = deepspeed_config(cfg, world_size, micro, accum)
    if cfg.train.deepspeed:
        ds = merge_user_config(ds, read_user_config(cfg.train.deepspeed), cfg.train.deepspeed)
    return ds


def build_engine(model: torch.nn.Module, cfg: Config, world_size: int, micro: int, accum: int):
    """``(engine, scheduler)`` for ``model`` (already on its device, SyncBN converted where wanted)."""
    import deepspeed

    if cfg.train.compile:
        model.compile()  # in place: parameter names (checkpoints, exports) stay those of the eager model
    optimizer = build_optimizer(model, cfg)
    factor = poly_factor(cfg)

    def scheduler(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    engine, _, _, sched = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=resolved_deepspeed_config(cfg, world_size, micro, accum),
    )
    if world_size == 1 and cfg.train.zero_stage == 0:
        # one process: the gradient "all-reduce" would flatten every gradient into a bucket, reduce it over
        # one rank and copy it back (an identity costing about 1% of a small CPU step)
        engine.enable_backward_allreduce = False
    return engine, sched


def set_schedule_step(engine, scheduler, step: int, cfg: Config) -> None:
    """Put the schedule (and DeepSpeed's step counters) at ``step`` after a weights-only load."""
    f = poly_factor(cfg)(step)
    scheduler.last_epoch = step
    lrs = [base * f for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
    engine.global_steps = step
    engine.global_samples = step * engine.train_batch_size()
