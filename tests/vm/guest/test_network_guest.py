"""The test bed boots with the loopback interface up: a server on 127.0.0.1 can be reached."""

from __future__ import annotations

import socket
import threading
from pathlib import Path


def test_loopback_is_up():
    flags = int(Path("/sys/class/net/lo/flags").read_text(), 16)
    assert flags & 0x1, "lo is down (IFF_UP not set)"


def test_a_server_on_127_0_0_1_answers():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def echo() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(conn.recv(16)[::-1])

        t = threading.Thread(target=echo)
        t.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"etmem")
            assert c.recv(16) == b"memte"
        t.join(10)
