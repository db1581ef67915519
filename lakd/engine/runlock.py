"""One process (one job) per stage folder: an advisory ``flock`` on ``<stage dir>/.lock``.

Two runs on one folder would delete each other's checkpoints (start-up cleanup of a save that is in fact
live) or replace each other's results. Rank 0 of a job takes the lock for the whole stage; a second job
is refused with the holder's pid and host, which the lock file records. The lock dies with its process
(SIGKILL included), so a crashed run never leaves a stale lock behind. On network file systems ``flock``
is forwarded to the server (NFSv4; Lustre with the ``flock`` mount option).
"""
from __future__ import annotations

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

    def acquire(self) -> Optional[str]:
        """Take the lock; returns None, or (held elsewhere) a one-line reason naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
            return (f"{self.path.parent} is in use by another run (pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, since {since}); wait for it to finish or stop it, or choose "
                    f"another run.name")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a new holder)
            self._fd = None
