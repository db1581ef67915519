"""lakd's console (lakd.log): one line format, rank 0 speaks, warnings from every rank with the rank in front, and
console.log in the run dir that ends as the console does (the final error line, a traceback)."""
from __future__ import annotations

import io
import logging
import re

import pytest

from lakd.cli import main
from lakd.config import load_config
from lakd.engine import callbacks
from lakd.engine.stage import run_stage
from lakd.log import RankFilter, setup_logging

from .helpers import tiny_args
from .test_stage_inprocess import LAUNCHER_VARS

STAMPED = re.compile(r"^\d\d:\d\d:\d\d (.*)$")


@pytest.fixture
def lakd_logging(monkeypatch):
    """The lakd handler as the `lakd` command sets it up; who speaks from the environment afterwards again."""
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    yield setup_logging
    setup_logging()


def _said(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_rank_filter_info_from_rank_0_only_warnings_from_every_rank_with_the_rank(lakd_logging, capsys):
    log = logging.getLogger("lakd.test_logging")
    lakd_logging(rank=1, world_size=2)
    log.info("info of rank 1")
    log.warning("warning of rank 1")
    log.error("error of rank 1")
    lines = _said(capsys)
    assert [STAMPED.match(x).group(1) for x in lines] == ["[rank 1] warning of rank 1", "[rank 1] error of rank 1"]

    lakd_logging(rank=0, world_size=2)
    log.info("info of rank 0")
    log.warning("warning of rank 0")
    assert [STAMPED.match(x).group(1) for x in _said(capsys)] == ["info of rank 0", "[rank 0] warning of rank 0"]

    lakd_logging(rank=0, world_size=1)  # a single process: no rank to tell apart
    log.warning("alone")
    assert [STAMPED.match(x).group(1) for x in _said(capsys)] == ["alone"]


def test_rank_filter_reads_the_launchers_environment(lakd_logging, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    lakd_logging()
    log = logging.getLogger("lakd.test_logging")
    log.info("not shown")
    log.warning("shown")
    assert [STAMPED.match(x).group(1) for x in _said(capsys)] == ["[rank 3] shown"]
    assert RankFilter(rank=0, world_size=1).where() == (0, 1)


def test_one_format_for_progress_warnings_corrupt_data_and_eval_progress(lakd_logging, capsys):
    from lakd.data.corrupt import CorruptWarner
    from lakd.engine.assemble import warn
    from lakd.engine.progress import Progress, track

    lakd_logging()
    p = Progress(total=2, start=0, desc="r/s", mode="plain", print_every=1)
    p.message("a message")
    p.update(2, {"loss": "0.5"})
    warn("something odd")
    CorruptWarner()("shard-0.tar:key: broken")
    list(track(range(3), total=3, desc="[eval image]", unit="images"))
    lines = _said(capsys)
    texts = [STAMPED.match(x).group(1) for x in lines]  # every line: wall-clock time, one space, the text
    assert texts[0] == "a message" and texts[1].startswith("r/s step 2/2 loss 0.5 | ")
    assert texts[2:4] == ["lakd train: warning: something odd",
                          "lakd.data: skipped corrupt data: shard-0.tar:key: broken"]
    assert texts[4].startswith("[eval image]: 3/3 images (100%), ") and len(texts) == 5

    out = io.StringIO()  # a display given its own stream writes there, in the same format
    Progress(total=1, start=0, desc="d", mode="plain", stream=out).message("to the stream")
    assert STAMPED.match(out.getvalue().strip()).group(1) == "to the stream" and _said(capsys) == []


def test_a_log_line_is_written_above_a_progress_bar(lakd_logging, capsys):
    import sys

    from tqdm import tqdm

    lakd_logging()
    bar = tqdm(total=3, file=sys.stderr, desc="bar")
    logging.getLogger("lakd.test_logging").info("over the bar")
    bar.close()
    err = capsys.readouterr().err
    # the bar is cleared first (a carriage return), the line gets a line of its own, the bar is drawn again
    assert re.search(r"\r\d\d:\d\d:\d\d over the bar\n", err) and err.rstrip().endswith("0/3 [00:00<?, ?it/s]")


def test_progress_mode_none_and_info_below_the_level_say_nothing(lakd_logging, capsys):
    from lakd.engine.progress import Progress

    lakd_logging()
    Progress(total=1, start=0, desc="d", mode="none").message("hidden")
    logging.getLogger("lakd.test_logging").debug("hidden too")
    assert _said(capsys) == []


class Boom(callbacks.Callback):
    def __init__(self, exc):
        self.exc = exc

    def on_step_end(self, trainer, step, loss, terms):
        if step == 2:
            raise self.exc


def _console(runs, name):
    return (runs / name / "baseline" / "console.log").read_text()


def test_console_log_gets_the_lines_and_the_traceback_in_process(shards, tmp_path, lakd_logging):
    runs = tmp_path / "runs"
    cfg = load_config("synthetic", tiny_args(shards, runs, "boom", **{"eval.every": 0}), stage="baseline")
    with pytest.raises(RuntimeError, match="boom at step 2"):
        run_stage(cfg, [Boom(RuntimeError("boom at step 2"))])
    text = _console(runs, "boom")
    lines = text.splitlines()
    assert lines[0].startswith("--- ")
    assert any(STAMPED.match(x) and " step 1/6 " in x for x in lines)  # the progress lines
    assert "Traceback (most recent call last):" in text and "in on_step_end" in text
    assert lines[-2] == "RuntimeError: boom at step 2" and lines[-1].endswith("stopped by RuntimeError: boom at step 2")


def test_lakd_train_console_log_ends_with_the_final_error_line_or_the_traceback(shards, tmp_path, lakd_logging,
                                                                                capsys):
    from lakd.engine.trainer import NonFiniteLoss

    runs = tmp_path / "runs"
    argv = ["train", "--stage", "baseline", "--config", "synthetic"]
    fault = Boom(NonFiniteLoss("loss is nan at step 2"))
    callbacks.register(fault)
    try:
        assert main([*argv, *tiny_args(shards, runs, "nan", **{"eval.every": 0})]) == 3
        # the command's own last line, after run_stage returned: in the file as on the console
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last == "lakd train: error: loss is nan at step 2"
        assert _console(runs, "nan").splitlines()[-1] == last
        assert "Traceback" not in _console(runs, "nan")  # the console showed none

        fault.exc = ValueError("a bug at step 2")  # not an error the command expects: the traceback ends it
        with pytest.raises(ValueError):
            main([*argv, *tiny_args(shards, runs, "bug", **{"eval.every": 0})])
    finally:
        callbacks.unregister(fault)
    text = _console(runs, "bug")
    assert "Traceback (most recent call last):" in text and "lakd/cli.py" in text  # the whole command's traceback
    assert text.splitlines()[-2] == "ValueError: a bug at step 2"
    import sys

    assert type(sys.stderr).__name__ != "_Tee"  # the console is the console again
