"""A free local TCP port, for the rendezvous of a process group that this machine starts (torch-free, so the
local sweep launcher can use it without importing torch)."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` now. The caller's processes bind it moments later; another
    program could take it in between, a race every launcher of this kind accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
