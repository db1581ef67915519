"""The shared checkpoint directory: DeepSpeed checkpoints per tag, an atomic ``latest`` pointer, retention.

Layout of ``<runs_dir>/<run>/<stage>/checkpoints/``::

    latest                     text: the tag of the newest *complete* checkpoint (DeepSpeed's format)
    best                       text: the tag of the checkpoint with the best evaluation (if kept)
    step_00001000/
        mp_rank_00_model_states.pt                 DeepSpeed (module, optimizer at ZeRO 0, lr scheduler)
        zero_pp_rank_<r>_mp_rank_00_optim_states.pt DeepSpeed, one per rank at ZeRO 1
        lakd_rank00000.json/.safetensors           per rank: data-loader state, RNG states, BN buffers
        lakd_meta.json                             written last, by rank 0: the "complete" marker

Saving is collective. Every rank calls ``engine.save_checkpoint`` and writes its own ``lakd_rank`` file;
then a barrier; then rank 0 writes ``lakd_meta.json`` and moves ``latest`` with an atomic rename. A process
killed anywhere in between leaves at most a tag folder without ``lakd_meta.json``. Such a folder is never
loaded, and the next start removes it. Loading goes through ``torch.load(weights_only=True)`` (with DeepSpeed's
few plain data classes allow-listed) and safetensors/JSON: nothing read from the shared directory can run code.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch

from lakd.io import atomic_write_text, naming_disk_full
from lakd.engine import distributed as D
from lakd.engine.state_io import load_state, save_state


META = "lakd_meta.json"
LATEST = "latest"
BEST = "best"
_TAG_RE = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (named, with the reason); never a raw DeepSpeed traceback."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _safe_globals() -> list:
    """DeepSpeed's plain data classes that appear in its checkpoint pickles (no code runs on load)."""
    out = []
    for module, names in (("deepspeed.runtime.fp16.loss_scaler", ("LossScaler", "DynamicLossScaler")),
                          ("deepspeed.runtime.zero.config", ("ZeroStageEnum",)),
                          ("deepspeed.utils.tensor_fragment", ("fragment_address",))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        out.extend(getattr(mod, n) for n in names if hasattr(mod, n))
    return out


def weights_only_load(path, map_location=None):
    """``torch.load(weights_only=True)`` with DeepSpeed's data classes allowed."""
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def make_loads_safe(engine) -> None:
    """Route every checkpoint read of a DeepSpeed engine through :func:`weights_only_load`."""
    engine.checkpoint_engine.load = weights_only_load


class Stateful(Protocol):
    """A part whose state goes into a checkpoint (torch.distributed.checkpoint.stateful's protocol)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


def rank_parts(loader, module, average_bn: bool) -> dict[str, Stateful]:
    """What every rank adds to a checkpoint beside DeepSpeed's engine state, by name: the data stream's
    position, the BatchNorm buffers it keeps for itself and its random generators. Saving and restoring both
    iterate this one mapping (the generators last: restoring the others must not draw from them)."""
    from lakd.engine.batchnorm import RankBuffers
    from lakd.engine.rng import ProcessRNG

    return {"loader": loader, "buffers": RankBuffers(module, average_bn), "rng": ProcessRNG()}


# parts that carry over to another world size or ZeRO layout (from the old rank of the same number, or the last)
PORTABLE = ("loader",)


def capture(parts: dict[str, Stateful]) -> dict:
    return {name: part.state_dict() for name, part in parts.items()}


def restore(parts: dict[str, Stateful], state: dict, names: Optional[tuple] = None) -> None:
    """Load ``state`` (from :func:`capture`) into ``parts``, all of them or only ``names``."""
    for name, part in parts.items():
        if names is None or name in names:
            part.load_state_dict(state[name])


class CheckpointManager:
    def __init__(self, directory: Path, *, keep_last: int = 2, keep_best: bool = True):
        self.dir = Path(directory)
        self.keep_last = int(keep_last)
        self.keep_best = bool(keep_best)

    # ------------------------------------------------------------------------------------ inspection
    def _tag_dirs(self) -> list[tuple[int, Path]]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            m = _TAG_RE.match(p.name)
            if m and p.is_dir():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def read_meta(self, tag: str) -> Optional[dict]:
        try:
            meta = json.loads((self.dir / tag / META).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("complete") else None

    def complete(self) -> list[dict]:
        """Metadata of every complete checkpoint, oldest first."""
        return [m for _, p in self._tag_dirs() if (m := self.read_meta(p.name)) is not None]

    def _pointer(self, name: str) -> Optional[str]:
        try:
            return (self.dir / name).read_text().strip() or None
        except OSError:
            return None

    def latest(self) -> Optional[dict]:
        """The newest complete checkpoint: the ``latest`` pointer if it names a complete one, else the highest
        complete step found on disk (the pointer may lag if a save was killed right after completing)."""
        done = self.complete()
        if not done:
            return None
        pointed = self._pointer(LATEST)
        newest = done[-1]
        if pointed and (meta := self.read_meta(pointed)) is not None and meta["step"] >= newest["step"]:
            return meta
        return newest

    def best_tag(self) -> Optional[str]:
        tag = self._pointer(BEST)
        return tag if tag and self.read_meta(tag) is not None else None

    def remove_incomplete(self) -> list[str]:
        """Rank 0 at start-up: delete tag folders a killed save left behind (call before a barrier)."""
        removed = []
        for _, p in self._tag_dirs():
            if self.read_meta(p.name) is None:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        for p in self.dir.glob("*.tmp-*") if self.dir.is_dir() else []:
            p.unlink(missing_ok=True)
        return removed

    # ------------------------------------------------------------------------------------------ save
    def save(self, engine, step: int, *, rank_state: dict, meta: dict, is_best: bool = False,
             on_written: Optional[Callable[[Path], None]] = None) -> str:
        """Collective: every rank calls this with its own ``rank_state``; returns the tag. ``on_written(path)``
        runs on each rank once its files are on disk, before the checkpoint is committed."""
        tag = tag_for(step)
        rank, world = D.rank(), D.world_size()
        if rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            if (self.dir / tag).exists():  # leftover of a killed save of the same step
                shutil.rmtree(self.dir / tag)
        D.barrier()
        client = {"lakd_step": int(step), "lakd_config_hash": meta.get("config_hash"), "lakd_best": meta.get("best")}
        with naming_disk_full(self.dir / tag):
            engine.save_checkpoint(str(self.dir), tag=tag, client_state=client, save_latest=False)
            save_state(self.dir / tag / f"lakd_rank{rank:05d}", rank_state)
        if on_written is not None:
            on_written(self.dir / tag)
        D.barrier()  # every rank's files are on disk
        if rank == 0:
            doc = {**meta, "complete": True, "tag": tag, "step": int(step), "world_size": world}
            atomic_write_text(self.dir / tag / META, json.dumps(doc, indent=1))
            atomic_write_text(self.dir / LATEST, tag)
            if is_best and self.keep_best:
                atomic_write_text(self.dir / BEST, tag)
            self.prune()
        D.barrier()
        return tag

    def mark_best(self, step: int) -> None:
        """Rank 0: point ``best`` at the (complete) checkpoint of ``step``."""
        if self.keep_best and self.read_meta(tag_for(step)) is not None:
            atomic_write_text(self.dir / BEST, tag_for(step))

    def prune(self) -> None:
        """Keep the newest ``keep_last`` complete checkpoints plus the best one."""
        done = [m["tag"] for m in self.complete()]
        keep = set(done[-self.keep_last:])
        latest = self._pointer(LATEST)
        if latest:
            keep.add(latest)
        best = self.best_tag() if self.keep_best else None
        if best:
            keep.add(best)
        for tag in done:
            if tag not in keep:
                shutil.rmtree(self.dir / tag, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ load
    def load(self, engine, meta: dict, *, module_only: bool) -> tuple[Optional[Any], Path]:
        """Load a complete checkpoint into ``engine`` (collective). ``module_only``: weights only (a different
        world size or ZeRO layout); the caller restores step and schedule. Returns (this rank's lakd state or
        None, checkpoint path)."""
        tag = meta["tag"]
        path = self.dir / tag
        make_loads_safe(engine)
        try:
            loaded, _ = engine.load_checkpoint(
                str(self.dir), tag=tag, load_module_strict=True, load_optimizer_states=not module_only,
                load_lr_scheduler_states=not module_only, load_module_only=module_only,
            )
        except Exception as exc:  # DeepSpeed raises many kinds; the user needs the file and the reason
            raise CheckpointError(f"cannot load checkpoint {path}: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        if loaded is None:
            raise CheckpointError(f"cannot load checkpoint {path}: DeepSpeed found no model states")
        base = path / f"lakd_rank{D.rank():05d}"
        state = None
        if not module_only:
            try:
                state = load_state(base)
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"cannot read {base}.json/.safetensors: {exc}") from exc
        return state, path

    def load_rank_state(self, tag: str, rank: int) -> Optional[Any]:
        try:
            return load_state(self.dir / tag / f"lakd_rank{rank:05d}")
        except (OSError, ValueError, KeyError):
            return None
