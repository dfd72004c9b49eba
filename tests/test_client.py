"""``etmem_core.client``: how the client reaches a daemon that is slow to accept."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

from etmem_core import client
from etmem_core.protocol import Cmd, Request


@contextlib.contextmanager
def full_backlog() -> Iterator[tuple[str, socket.socket, list[socket.socket]]]:
    """A listening socket nobody accepts on, its backlog filled by silent connects:
    ``(name, listener, fillers)``, all closed afterwards."""
    name = f"etmem-test-backlog-{uuid.uuid4().hex[:8]}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        while True:  # fill the backlog until a non-blocking connect is refused
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect("\0" + name)
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        yield name, listener, fillers
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_a_full_listen_backlog_makes_the_client_wait_not_fail():
    """A daemon whose backlog is full (a flood of connects, a burst of clients) must cost the
    client a wait within its timeout, not an immediate EAGAIN."""
    with full_backlog() as (name, listener, fillers):

        def serve_late() -> None:
            threading.Event().wait(0.3)
            for s in fillers:  # they send nothing: end them so the server reads EOF at once
                s.shutdown(socket.SHUT_WR)
            for _ in range(len(fillers) + 1):
                conn, _ = listener.accept()
                conn.settimeout(5)
                try:
                    if conn.recv(512):
                        conn.sendall(b"hello\n\xff")
                except OSError:
                    pass
                conn.close()

        server = threading.Thread(target=serve_late, daemon=True)
        server.start()
        out = bytearray()
        result = client.call(name, Request(Cmd.PROJ_SHOW), out.extend, timeout=5)
        assert result.success and bytes(out) == b"hello\n"


def test_connect_gives_up_at_the_clients_deadline():
    with full_backlog() as (name, _listener, _fillers):
        try:
            client.call(name, Request(Cmd.PROJ_SHOW), lambda b: None, timeout=0.3)
        except client.ClientError as exc:
            assert exc.stage == "connect" and "0.3 s" in str(exc), exc
        else:
            raise AssertionError("connected to a daemon that never accepts")
