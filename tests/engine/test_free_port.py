"""lakd.net.free_port: the one free-port helper of the engine's single-process rendezvous, the local sweep
launcher and the tests."""
from __future__ import annotations

import socket

from lakd.engine import distributed as D
from lakd.net import free_port


def test_free_port_is_bindable_and_the_single_process_rendezvous_uses_it(monkeypatch):
    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # free: a rendezvous can listen on it
        s.listen()
    monkeypatch.setattr(D, "free_port", lambda: 12345)
    assert D.detect({}).master_port == 12345  # a lone process without MASTER_PORT takes a free one
    assert D.detect({"MASTER_PORT": "2222"}).master_port == 2222
