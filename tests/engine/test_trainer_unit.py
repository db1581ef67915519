"""Trainer.fit in one process with fakes (no DeepSpeed, no data pipeline, no process group): the loop's
decisions when to log, evaluate, track the best model, checkpoint, stop for preemption and stop on NaN.
The real engine is covered by the multi-process tests (test_resume.py, test_stages.py)."""
from __future__ import annotations

import json
import signal
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from lakd.config import load_config
from lakd.engine.callbacks import Callback
from lakd.engine.preemption import Preempted, PreemptionFlag
from lakd.engine.progress import MetricsLog
from lakd.engine.trainer import EvalResult, NonFiniteLoss, Trainer, TrainState


class FakeEngine:
    """The part of DeepSpeed's engine the loop uses: forward, backward, step, module, train()."""

    def __init__(self):
        torch.manual_seed(0)
        self.module = torch.nn.Linear(2, 1)
        self.opt = torch.optim.SGD(self.module.parameters(), lr=0.1)
        self.steps = 0

    def __call__(self, x):
        return self.module(x)

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.opt.step()
        self.opt.zero_grad()
        self.steps += 1

    def train(self):
        self.module.train()


class FakeLoader:
    def __init__(self):
        self.served = 0

    def __next__(self):
        self.served += 1
        return {"x": torch.ones(4, 2), "y": torch.zeros(4, 1)}

    def state_dict(self):
        return {"served": self.served}


class FakeCheckpoints:
    def __init__(self, tmp_path):
        self.dir = tmp_path / "checkpoints"
        self.saves, self.best = [], []

    def save(self, engine, step, *, rank_state, meta, is_best=False, on_written=None):
        if on_written is not None:
            on_written(self.dir / f"step_{step:08d}")
        self.saves.append({"step": step, "is_best": is_best, "loader": rank_state["loader"], **meta})
        return f"step_{step:08d}"

    def latest(self):
        return {"tag": f"step_{self.saves[-1]['step']:08d}"} if self.saves else None

    def mark_best(self, step):
        self.best.append(step)


def objective(poison=()):
    """Squared error; the loss is NaN at the (1-based) steps in ``poison``."""
    def fn(engine, batch, step):
        loss = ((engine(batch["x"]) - batch["y"]) ** 2).mean()
        if step + 1 in poison:
            loss = loss * float("nan")
        return SimpleNamespace(loss=loss, terms={"mse": loss.detach()})
    return fn


def make(tmp_path, *, iters=10, eval_every=4, ckpt_every=3, accum=1, scores=None, state=None, poison=(),
         on_signal_at=None):
    cfg = load_config("synthetic", [f"train.iters={iters}", f"eval.every={eval_every}",
                                    f"checkpoint.every={ckpt_every}", "train.batch_size=4"])
    engine, loader, ckpt = FakeEngine(), FakeLoader(), FakeCheckpoints(tmp_path)
    scores = list(scores or [])
    evals, best_calls = [], []

    def evaluate(max_images):
        evals.append(max_images)
        s = scores.pop(0) if scores else 0.0
        return EvalResult({"image": {"miou": s}}, s)

    flag = PreemptionFlag()

    class Record(Callback):
        def on_best(self, trainer, step):
            best_calls.append(step)

        def on_step_start(self, trainer, step):
            if on_signal_at is not None and step + 1 == on_signal_at:  # the signal arrives while the step runs
                flag._handle(signal.SIGTERM, None)

    events = EventLog()
    trainer = Trainer(cfg, engine=engine, scheduler=torch.optim.lr_scheduler.LambdaLR(engine.opt, lambda s: 1.0),
                      objective=objective(poison), loader=loader, device=torch.device("cpu"), accum=accum,
                      ckpt=ckpt, evaluate=evaluate, average_bn=False, metrics=MetricsLog(tmp_path / "m.jsonl"),
                      progress=None, flag=flag, state=state or TrainState(), callbacks=[Record(), events])
    return trainer, SimpleNamespace(engine=engine, loader=loader, ckpt=ckpt, evals=evals, best=best_calls,
                                    events=events.seen)


class EventLog:
    """A duck-typed callback (no base class) recording every event it sees."""

    def __init__(self):
        self.seen = []

    def __getattr__(self, event):
        if not event.startswith("on_"):
            raise AttributeError(event)
        return lambda trainer, *args: self.seen.append((event, *args))


def _log(tmp_path):
    return [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]


def test_steps_logs_evaluations_best_model_and_checkpoints(tmp_path):
    trainer, f = make(tmp_path, iters=10, eval_every=4, ckpt_every=3, accum=2, scores=[0.3, 0.2])
    trainer.fit()
    st = trainer.state
    assert st.step == 10 and f.engine.steps == 20 and f.loader.served == 20  # 2 micro-batches per step
    assert [r["step"] for r in _log(tmp_path) if "loss" in r] == list(range(1, 11))
    assert [r["step"] for r in _log(tmp_path) if "eval" in r] == [4, 8]
    assert f.evals == [None, None]  # steps 4 and 8, not the last one (the stage evaluates it)
    assert st.history == [{"step": 4, "score": 0.3}, {"step": 8, "score": 0.2}]
    assert st.best == {"step": 4, "score": 0.3} and f.best == [4]
    # every ck_every steps, at the new best, and at the end
    assert [(s["step"], s["is_best"]) for s in f.ckpt.saves] == [(3, False), (4, True), (6, False), (9, False),
                                                                (10, False)]
    assert f.ckpt.saves[-1]["loader"] == {"served": 20} and f.ckpt.saves[-1]["config_hash"] == trainer.cfg.hash()
    resumed = TrainState()  # what a resume reads back from the last checkpoint's meta is the loop's state
    resumed.load_state_dict(f.ckpt.saves[-1])
    assert replace(resumed, seconds=st.seconds) == st and resumed.seconds <= st.seconds  # time after the save


def test_preemption_saves_at_the_step_boundary_and_stops(tmp_path):
    trainer, f = make(tmp_path, iters=10, eval_every=0, ckpt_every=100, on_signal_at=5)
    with pytest.raises(Preempted) as exc:
        trainer.fit()
    assert exc.value.step == 5 and exc.value.signum == signal.SIGTERM and exc.value.exit_status == 75
    assert [s["step"] for s in f.ckpt.saves] == [5] and trainer.state.step == 5


def test_preemption_at_an_evaluation_step_leaves_it_for_the_resumed_run(tmp_path):
    trainer, f = make(tmp_path, iters=10, eval_every=4, ckpt_every=100, on_signal_at=4)
    with pytest.raises(Preempted):
        trainer.fit()
    assert f.evals == [] and f.ckpt.saves[-1]["pending_eval"] is True
    # the resumed run evaluates that step first, then goes on
    state = TrainState(step=4, pending_eval=True)
    resumed, g = make(tmp_path, iters=6, eval_every=4, ckpt_every=100, scores=[0.5], state=state)
    resumed.fit()
    assert g.evals == [None] and resumed.state.history == [{"step": 4, "score": 0.5}] and g.ckpt.best == [4]
    assert resumed.state.step == 6 and not resumed.state.pending_eval


def test_ctrl_c_is_a_preemption_with_its_own_exit_status(tmp_path):
    trainer, f = make(tmp_path, iters=10, eval_every=0, ckpt_every=100)
    trainer.flag._handle(signal.SIGINT, None)
    with pytest.raises(Preempted) as exc:
        trainer.fit()
    assert exc.value.exit_status == 130 and "run the same command again to resume" in str(exc.value)
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait for the step boundary
        trainer.flag._handle(signal.SIGINT, None)


def test_nonfinite_loss_stops_without_saving(tmp_path):
    trainer, f = make(tmp_path, iters=10, eval_every=0, ckpt_every=2, poison={5})
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step 5.*step_00000004"):
        trainer.fit()
    assert [s["step"] for s in f.ckpt.saves] == [2, 4]


def test_callbacks_see_the_loop_events_in_order(tmp_path):
    trainer, f = make(tmp_path, iters=4, eval_every=2, ckpt_every=3, scores=[0.5])
    trainer.fit()
    names = [e[0] for e in f.events]
    step2 = names[names.index("on_step_start", names.index("on_step_end")):]
    # step 2: start, computed (this rank), end (agreed), log, eval, best, written + saved (a new best is saved)
    assert step2[:9] == ["on_step_start", "on_step_computed", "on_step_end", "on_log", "on_eval", "on_best",
                         "on_checkpoint_written", "on_checkpoint_saved", "on_step_start"]
    starts = [e[1] for e in f.events if e[0] == "on_step_start"]
    ends = [e[1] for e in f.events if e[0] == "on_step_end"]
    assert starts == [0, 1, 2, 3] and ends == [1, 2, 3, 4]  # steps done before / after each step
    loss = [e for e in f.events if e[0] == "on_step_end"][0][2]
    assert loss == pytest.approx(_log(tmp_path)[0]["loss"])
    evals = [e for e in f.events if e[0] == "on_eval"]
    assert [(e[1], e[2].score, e[3]) for e in evals] == [(2, 0.5, False)]
    saved = [(e[1], e[2], e[3]) for e in f.events if e[0] == "on_checkpoint_saved"]
    assert saved == [(2, "step_00000002", True), (3, "step_00000003", False), (4, "step_00000004", False)]
    written = [(e[1], e[2].name) for e in f.events if e[0] == "on_checkpoint_written"]
    assert written == [(2, "step_00000002"), (3, "step_00000003"), (4, "step_00000004")]
    # the stage's final evaluation goes through the same record path, marked final
    trainer.log_eval(EvalResult({"image": {"miou": 0.7}}, 0.7), final=True)
    assert f.events[-1][0] == "on_eval" and f.events[-1][3] is True
    assert _log(tmp_path)[-1]["eval"] == {"image": {"miou": 0.7}}


def test_nonfinite_step_reaches_no_step_end_callback(tmp_path):
    trainer, f = make(tmp_path, iters=10, eval_every=0, ckpt_every=100, poison={3})
    with pytest.raises(NonFiniteLoss):
        trainer.fit()
    assert [e[1] for e in f.events if e[0] == "on_step_end"] == [1, 2]
    assert [e[1] for e in f.events if e[0] == "on_step_computed"] == [0, 1, 2]
