"""Callbacks of the train loop: the one way to act at its events (exports, monitoring, instrumentation, faults).

The :class:`~lakd.engine.trainer.Trainer` calls each event on every callback of its list, in order, as
``callback.<event>(trainer, ...)``; a callback defines only the events it needs (:class:`Callback` gives no-op
defaults). Events, in the order one step meets them (``step`` = steps done so far):

- ``on_step_start(trainer, step)``: before the step's first micro-batch;
- ``on_step_computed(trainer, step, values)``: this rank's micro-batches are done (forward, backward,
  optimizer); ``values`` = [loss, *terms] before the ranks agree (``step`` is still the old count);
- ``on_step_end(trainer, step, loss, terms)``: every rank agreed on a finite step; loss and terms are the means
  over ranks; before the step's logging, evaluation and checkpoint;
- ``on_log(trainer, step, record)``: rank 0 wrote a metrics record of a step;
- ``on_eval(trainer, step, result, final)``: an evaluation finished (periodic, or the stage's final one);
- ``on_best(trainer, step)``: a periodic evaluation is the best so far (BatchNorm buffers averaged over the
  ranks meanwhile, so every rank sees the model that is exported);
- ``on_checkpoint_written(trainer, step, path)``: this rank's checkpoint files are on disk, not yet committed;
- ``on_checkpoint_saved(trainer, step, tag, is_best)``: the checkpoint is complete (``latest`` names it).

Production uses them for the best-model export (:class:`ExportBest`) and the TensorBoard / W&B monitor
(:class:`MonitorLog`); tests use them to inject signals and faults. Callbacks that every stage started in this
process should run (a test harness wrapping the ``lakd`` CLI) are added with :func:`register`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from lakd.engine.trainer import EvalResult, Trainer

_REGISTERED: list = []


class Callback:
    """No-op defaults for every event (subclass and override what you need)."""

    def on_step_start(self, trainer: "Trainer", step: int) -> None:
        pass

    def on_step_computed(self, trainer: "Trainer", step: int, values) -> None:
        pass

    def on_step_end(self, trainer: "Trainer", step: int, loss: float, terms: dict) -> None:
        pass

    def on_log(self, trainer: "Trainer", step: int, record: dict) -> None:
        pass

    def on_eval(self, trainer: "Trainer", step: int, result: "EvalResult", final: bool) -> None:
        pass

    def on_best(self, trainer: "Trainer", step: int) -> None:
        pass

    def on_checkpoint_written(self, trainer: "Trainer", step: int, path) -> None:
        pass

    def on_checkpoint_saved(self, trainer: "Trainer", step: int, tag: str, is_best: bool) -> None:
        pass


def emit(callbacks, event: str, trainer, *args) -> None:
    """Call ``event`` on every callback that defines it, in list order."""
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(trainer, *args)


def register(callback) -> None:
    """Add ``callback`` to every stage this process runs from now on (after the stage's own callbacks)."""
    _REGISTERED.append(callback)


def unregister(callback) -> None:
    """Remove a callback :func:`register` added (no error when it is not there)."""
    if callback in _REGISTERED:
        _REGISTERED.remove(callback)


def registered() -> list:
    return list(_REGISTERED)


class ExportBest(Callback):
    """Rank 0 exports the model as ``<stage>-best`` at every new best periodic evaluation."""

    def __init__(self, exporter, model, name: str, *, rank: int):
        self.exporter, self.model, self.name, self.rank = exporter, model, name, rank

    def on_best(self, trainer, step: int) -> None:
        if self.rank == 0:
            self.exporter.save(self.model, self.name, step)


class MonitorLog(Callback):
    """Feeds rank 0's metrics records and evaluations to a :class:`lakd.engine.monitor.Monitor`."""

    def __init__(self, monitor, class_names: Optional[list] = None):
        self.monitor, self.class_names = monitor, list(class_names or [])

    def on_log(self, trainer, step: int, record: dict) -> None:
        self.monitor.log_step(step, record)

    def on_eval(self, trainer, step: int, result, final: bool) -> None:
        self.monitor.log_eval(step, result.metrics, self.class_names, result.previews)
