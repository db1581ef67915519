"""What a running stage shows: TensorBoard events, W&B (faked), console.log, timed log lines, an ETA that
excludes evaluations."""
from __future__ import annotations

import importlib.machinery
import io
import json
import struct
import sys
import types

import pytest

from lakd.config import ConfigError, load_config
from lakd.engine import progress as progress_mod
from lakd.engine.progress import ConsoleLog, Progress
from lakd.engine.stage import run_stage

from .helpers import LAUNCHER_VARS, tiny_args


def read_events(folder):
    """Every Event record of the TFRecord event files under ``folder`` (length, crc, payload, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event()
            event.ParseFromString(data[pos + 12:pos + 12 + n])
            events.append(event)
            pos += 12 + n + 4
    return events


class FakeWandb(types.ModuleType):
    def __init__(self):
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.logged, self.inits, self.finished = [], [], 0
        fake = self

        class Run:
            def log(self, data, step):
                fake.logged.append((step, data))

            def finish(self):
                fake.finished += 1

        self._run = Run

    def init(self, **kw):
        self.inits.append(kw)
        return self._run()

    class Image:
        def __init__(self, array):
            self.shape = array.shape


@pytest.fixture
def clean_env(monkeypatch):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)


def test_tensorboard_wandb_console_and_timed_lines(shards, tmp_path, monkeypatch, clean_env):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    runs = tmp_path / "runs"
    cfg = load_config("synthetic", tiny_args(shards, runs, "mon", **{"log.wandb": "true", "log.preview_images": 2}),
                      stage="baseline")
    run_stage(cfg)
    stage_dir = runs / "mon" / "baseline"

    events = read_events(stage_dir / "tensorboard")
    scalars: dict[str, list[int]] = {}
    images: dict[str, list[int]] = {}
    for e in events:
        for v in e.summary.value:
            target = images if v.HasField("image") else scalars
            target.setdefault(v.tag, []).append(e.step)
    for tag in ("train/loss", "train/ce", "train/lr", "perf/images_per_s", "perf/data_s", "perf/compute_s",
                "memory/max_rss_mb"):
        assert scalars[tag] == [1, 2, 3, 4, 5, 6], tag
    # periodic evaluation at step 3, final evaluation at 6: mIoU and every class's IoU
    assert scalars["eval/image/mIoU"] == [3, 6] and scalars["eval/image/IoU/background"] == [3, 6]
    assert len(images) == 2 and all(steps == [3, 6] for steps in images.values())
    image = next(v.image for e in events for v in e.summary.value if v.HasField("image"))
    assert image.width == 2 * 64 + 2 and image.height == 64  # label | gap | prediction

    assert fake.inits[0]["name"] == "mon/baseline" and fake.inits[0]["config"]["run"]["name"] == "mon"
    logged = {k for _, d in fake.logged for k in d}
    assert {"train/loss", "eval/image/mIoU", "memory/max_rss_mb"} <= logged and fake.finished == 1

    lines = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert all(r["data_s"] >= 0 and r["compute_s"] > 0 for r in steps)

    console = (stage_dir / "console.log").read_text()
    assert "lakd train: baseline" in console and "finished at step 6" in console
    step_lines = [x for x in console.splitlines() if " step 6/6 " in x]
    assert step_lines and all(k in step_lines[0] for k in ("data ", "compute ", "mem ", "MB", "eta"))
    assert step_lines[0][:2].isdigit() and step_lines[0][2] == ":"  # starts with the wall-clock time
    assert "[eval image]: 8/8 images (100%)" in console  # evaluation progress


def test_tensorboard_off_and_wandb_without_its_package(shards, tmp_path, monkeypatch, clean_env):
    runs = tmp_path / "runs"
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails: as if not installed
    monkeypatch.setattr("lakd.engine.monitor.importlib.util.find_spec", lambda name: None)
    cfg = load_config("synthetic", tiny_args(shards, runs, "w", **{"log.wandb": "true"}), stage="baseline")
    with pytest.raises(ConfigError, match="log.wandb.*pip install wandb"):
        run_stage(cfg)
    assert not (runs / "w").exists()
    cfg = load_config("synthetic", tiny_args(shards, runs, "tboff", **{"log.tensorboard": "false",
                                                                     "train.iters": 2, "eval.every": 0}),
                      stage="baseline")
    run_stage(cfg)
    assert not (runs / "tboff" / "baseline" / "tensorboard").exists()
    assert (runs / "tboff" / "baseline" / "console.log").is_file()


def test_eta_excludes_paused_time(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress_mod.time, "time", lambda: clock[0])
    out = io.StringIO()
    p = Progress(total=10, start=0, desc="r/s", mode="plain", print_every=1, stream=out)
    clock[0] += 1
    p.update(1, {"loss": "1"})
    with p.paused():
        clock[0] += 100  # an evaluation
    clock[0] += 1
    p.update(2, {"loss": "1"})
    last = out.getvalue().splitlines()[-1]
    assert "1.00 step/s, eta 0:00:08" in last, last


def test_console_log_keeps_lines_and_drops_bar_redraws(tmp_path, capsys):
    log = ConsoleLog(tmp_path / "console.log")
    print("hello")
    sys.stderr.write("\r 10%|#   | 1/10")
    sys.stderr.write("\n")
    print("warning: x", file=sys.stderr)
    log.close(RuntimeError("boom"))
    text = (tmp_path / "console.log").read_text().splitlines()
    assert text[1:] == ["hello", "warning: x", text[-1]] and text[-1].endswith("stopped by RuntimeError: boom")
    assert "hello" in capsys.readouterr().out  # the console still gets everything


def test_resumed_session_purges_what_the_interrupted_one_logged_after_the_checkpoint(tmp_path):
    from tensorboardX.proto.event_pb2 import SessionLog

    from lakd.engine.monitor import Monitor

    first = Monitor(tmp_path, run_name="r", stage="baseline", config={}, resume_step=0)
    for step in range(1, 6):
        first.log_step(step, {"loss": 1.0 / step, "lr": 0.1})
    first.close()
    second = Monitor(tmp_path, run_name="r", stage="baseline", config={}, resume_step=3)
    second.log_step(4, {"loss": 0.2, "lr": 0.1})
    second.close()
    events = read_events(tmp_path / "tensorboard")
    # TensorBoard drops earlier events at steps >= the START marker's step: 4 and 5 of the first session
    starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == SessionLog.START]
    assert starts == [4]
    assert [e.step for e in events if any(v.tag == "train/loss" for v in e.summary.value)] == [1, 2, 3, 4, 5, 4]
