"""The socket protocol between etmemd and an ``isolate=yes`` engine's helper process.

Length-prefixed pickles over a unix socketpair, a message optionally carrying one fd
(SCM_RIGHTS). Pickle is safe here because both ends are this package, started by etmemd.
A request is a dict with ``op`` (and ``snapshot``, see :mod:`.isolate`); an answer is
``(error_kind, value)`` with ``error_kind`` "" on success or a name in :data:`ERRORS`.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

from etmem_sdk import ConfigError, EngineError, EtmemError

HEADER = struct.Struct("!I")
#: The errors that cross the socket by class name (anything else arrives as EngineError).
ERRORS: dict[str, type[EtmemError]] = {"ConfigError": ConfigError, "EngineError": EngineError}


def send(sock: socket.socket, obj: Any, fd: int | None = None) -> None:
    """Send one message, with ``fd`` if given."""
    data = pickle.dumps(obj)
    frame = HEADER.pack(len(data)) + data
    if fd is None:
        sock.sendall(frame)
    else:
        sent = socket.send_fds(sock, [frame], [fd])
        if sent < len(frame):
            sock.sendall(frame[sent:])


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket) -> tuple[Any, int | None] | None:
    """One message and the fd sent with it; ``None`` at end of stream."""
    head, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 1)
    if not head:
        return None
    rest = _recv_exact(sock, HEADER.size - len(head)) if len(head) < HEADER.size else b""
    if rest is None:
        return None
    (length,) = HEADER.unpack(head + rest)
    data = _recv_exact(sock, length)
    if data is None:
        return None
    return pickle.loads(data), (fds[0] if fds else None)
