"""Fast checks (no mounts, any user) of how a failed write surfaces: named, one line, never masked by a later
close, never raised from a background thread or a print. tests/engine/test_real_disk_faults.py does the same
on real full / read-only / immutable file systems."""
from __future__ import annotations

import errno
import io
import os
import sys

import pytest

from lakd.cli import main


def _enospc(*_a, **_kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_tensorboard_write_failure_is_raised_in_the_training_process_naming_the_file(tmp_path, monkeypatch):
    """tensorboardX writes in its own thread: its ENOSPC must neither kill that thread with a traceback (and
    then block the next events) nor go unnoticed; the next log call raises it, naming the event file."""
    import threading

    from tensorboardX import record_writer

    from lakd.engine.monitor import Monitor

    died = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    mon = Monitor(tmp_path, run_name="r", stage="baseline", config={}, resume_step=0)
    monkeypatch.setattr(record_writer.RecordWriter, "write", _enospc)
    monkeypatch.setattr(record_writer.RecordWriter, "flush", _enospc)
    for step in range(1, 30):  # more events than tensorboardX's queue holds: a dead thread would block here
        try:
            mon.log_step(step, {"loss": 1.0, "lr": 0.1})
        except OSError as exc:
            assert exc.errno == errno.ENOSPC and str(tmp_path / "tensorboard") in exc.filename
            break
        mon._tb.flush()
    else:
        raise AssertionError("the failed event write was never raised")
    with pytest.raises(OSError):
        mon.close()  # said again at close (the session keeps the first error when the stage already failed)
    assert not died


def test_metrics_log_names_itself(tmp_path, monkeypatch):
    from lakd.engine.progress import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    monkeypatch.setattr(log, "_f", type("Full", (), {"write": _enospc, "close": lambda self: None})())
    with pytest.raises(OSError) as exc:
        log.write({"step": 1, "loss": 1.0})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "metrics.jsonl")


def test_console_copy_that_cannot_be_written_is_dropped_not_raised(tmp_path, monkeypatch):
    from lakd.engine.progress import ConsoleLog

    shown = io.StringIO()
    monkeypatch.setattr(sys, "stdout", shown)
    console = ConsoleLog(tmp_path / "console.log")
    real = console._file
    monkeypatch.setattr(real, "write", _enospc)
    print("still shown")  # would raise ENOSPC from print() if the copy were not dropped
    monkeypatch.undo()
    console.close(RuntimeError("stop"))
    assert "still shown" in shown.getvalue() and sys.stdout is not console and real.closed


class _FailingCommand:
    def __init__(self, exc):
        self.exc = exc

    def __call__(self, args):
        raise self.exc


@pytest.mark.parametrize("exc, code, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.png"), 1,
     "lakd predict: error: cannot write /data/x.png: no space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/x.png"), 1,
     "lakd predict: error: cannot write /data/x.png: no space left"),
])
def test_cli_full_disk_is_one_line_exit_1(monkeypatch, capsys, exc, code, line):
    from lakd.commands import predict

    monkeypatch.setattr(predict, "run", _FailingCommand(exc))
    assert main(["predict", "e", "i", "--out", "o"]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith(line) and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),  # names no file
                                 OSError(errno.EIO, "Input/output error", "/data/x.png")])  # not a full disk
def test_cli_other_os_errors_keep_their_traceback(monkeypatch, exc):
    from lakd.commands import predict

    monkeypatch.setattr(predict, "run", _FailingCommand(exc))
    with pytest.raises(OSError):
        main(["predict", "e", "i", "--out", "o"])


def test_unwritable_entry_of_a_writable_folder(tmp_path, monkeypatch):
    """An immutable file inside a writable stage folder (root's permission bits say nothing; os.access sees
    the attribute) and a sub-folder that files cannot be created in."""
    import tempfile

    from lakd.io import unwritable_entry

    (tmp_path / "config.yaml").write_text("x")
    (tmp_path / "checkpoints").mkdir()
    assert unwritable_entry(tmp_path) is None and unwritable_entry(tmp_path / "missing") is None
    frozen = str(tmp_path / "config.yaml")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != frozen and real_access(p, mode))
    assert unwritable_entry(tmp_path) == f"cannot replace {frozen}: not writable (immutable, read-only or permissions)"
    monkeypatch.setattr(os, "access", real_access)
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if str(dir) == str(tmp_path / "checkpoints"):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        return real_mkstemp(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert unwritable_entry(tmp_path) == (f"cannot create files in {tmp_path / 'checkpoints'}: "
                                          f"{os.strerror(errno.EPERM)}")
    assert unwritable_entry(tmp_path, folders=False) is None


def test_a_writer_that_names_no_errno_on_a_file_system_out_of_inodes(tmp_path, monkeypatch):
    """DeepSpeed reports a checkpoint folder it could not make as a missing parent; with bytes to spare but no
    inode left that is a full disk, named as such."""
    from lakd.io import naming_disk_full

    # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
    no_inodes = os.statvfs_result((4096, 4096, 2560, 2000, 2000, 12, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda p: no_inodes)
    with pytest.raises(OSError) as exc, naming_disk_full(tmp_path / "step_00000002"):
        raise RuntimeError(f"Parent directory {tmp_path / 'step_00000002'} does not exist.")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "step_00000002")
    roomy = os.statvfs_result((4096, 4096, 2560, 2000, 2000, 12, 5, 5, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda p: roomy)
    with pytest.raises(RuntimeError), naming_disk_full(tmp_path / "step_00000002"):
        raise RuntimeError("something else")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (a device every write to fails ENOSPC)")
def test_console_log_that_cannot_take_its_first_line_is_named():
    from pathlib import Path

    from lakd.engine.progress import ConsoleLog

    streams = (sys.stdout, sys.stderr)
    with pytest.raises(OSError) as exc:
        ConsoleLog(Path("/dev/full"))
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == "/dev/full"
    assert (sys.stdout, sys.stderr) == streams  # not redirected into a copy that cannot be written
