"""One process (one job) per stage folder: an advisory ``flock`` on ``<stage dir>/.lock``.

Two runs on one folder would delete each other's checkpoints (start-up cleanup of a save that is in fact
live) or replace each other's results. Rank 0 of a job takes the lock for the whole stage; a second job
is refused with the holder's pid and host, which the lock file records. The lock dies with its process
(SIGKILL included), so a crashed run never leaves a stale lock behind. On network file systems ``flock``
is forwarded to the server (NFSv4; Lustre with the ``flock`` mount option).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: Optional[int] = None
        self.unsupported: Optional[str] = None  # why the file system refused to lock at all

    def acquire(self) -> Optional[str]:
        """Take the lock; returns None, or (held elsewhere) a one-line reason naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                # a file system without locks: run unprotected, and say so
                os.close(fd)
                self.unsupported = f"cannot lock {self.path} ({exc.strerror}); make sure no other job uses this folder"
                return None
            holder = _read_holder(fd)
            try:
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("since"))))
            except (ValueError, TypeError, OverflowError):
                since = "?"
            os.close(fd)
            return (f"{self.path.parent} is in use by another run (pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, since {since}); wait for it to finish or stop it, or choose "
                    f"another run.name")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(),
                      0)
        except OSError as exc:  # a full disk: drop the lock again and name the file
            os.close(fd)
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a new holder)
            self._fd = None


def _read_holder(fd: int) -> dict:
    """What the lock's holder recorded (pid, host, since); {} when unreadable."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (ValueError, OSError):
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_holder(folder: Path) -> Optional[dict]:
    """The process that holds ``folder``'s run lock (a ``lakd train`` of that stage still running, perhaps left
    behind by a killed launcher): ``{"pid", "host", "since"}`` as it recorded them; None when the folder is free.
    Probing takes a shared lock for an instant and drops it at once."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file: never run, or not here
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return None  # a file system without locks: nothing to learn
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
