"""Talk to an etmemd: connect, send one request, stream the reply to the caller."""

from __future__ import annotations

import errno
import socket
import time
from array import array  # socket has imported it; struct would be two modules more
from collections.abc import Callable

from .protocol import RECV_CHUNK, TIMEOUT, ReplyDecoder, Request, encode_request, socket_address


class ClientError(Exception):
    """The exchange with etmemd failed before a complete reply arrived.

    ``stage`` is ``"connect"``, ``"send"`` or ``"recv"``; ``errno`` is set for socket errors.
    """

    def __init__(self, stage: str, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = errno


class Result:
    """How a complete reply ended: ``success`` is the marker (0xFF true, 0xFE false)."""

    __slots__ = ("success",)

    def __init__(self, success: bool) -> None:
        self.success = success

    def __repr__(self) -> str:
        return f"Result(success={self.success})"


def call(
    socket_name: str,
    request: Request,
    out: Callable[[bytes], None],
    timeout: float = TIMEOUT,
) -> Result:
    """Send ``request`` to the etmemd listening on ``socket_name``; pass reply text to ``out``.

    Output is handed over chunk by chunk as it arrives (an engine command may stream), with the
    marker removed as the C client does. Raises :class:`ClientError` when the daemon cannot be
    reached, the request cannot be sent, or the reply breaks off (closed or timed out); raises
    :class:`~etmem_core.protocol.ProtocolError` for a request too long or a bad socket name.
    """
    address = socket_address(socket_name)
    data = encode_request(request)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:  # no descriptor to be had (EMFILE, ENFILE, ...): C exits with errno
        raise ClientError("connect", exc.strerror or str(exc), exc.errno) from None
    with sock:
        _connect(sock, address, timeout)
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
            # The request has no terminator: the end of stream tells etmemd it is whole, so
            # it need not wait to see whether the last value goes on.
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise ClientError("send", exc.strerror or str(exc), exc.errno) from None
        decoder = ReplyDecoder()
        while not decoder.done:
            try:
                chunk = sock.recv(RECV_CHUNK)
            except TimeoutError:
                raise ClientError("recv", f"no reply within {timeout:g} s") from None
            except OSError as exc:
                raise ClientError("recv", exc.strerror or str(exc), exc.errno) from None
            if not chunk:
                raise ClientError("recv", "connection closed before the reply was complete")
            text = decoder.feed(chunk)
            if text:
                out(text)
        return Result(success=decoder.success)


def _connect(sock: socket.socket, address: str, timeout: float) -> None:
    """Connect within ``timeout`` seconds, waiting while the daemon's listen backlog is full.

    A non-blocking connect to a unix socket whose backlog is full fails at once with EAGAIN
    (a burst of clients, or any local user flooding connects, would then deny us service), so
    the connect blocks, bounded by SO_SNDTIMEO, which the kernel applies to it.
    """
    deadline = time.monotonic() + timeout
    sock.setblocking(True)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientError(
                "connect", f"etmemd accepted no connection within {timeout:g} s", errno.EAGAIN
            )
        sec = int(left)
        usec = max(1, int((left - sec) * 1e6)) if sec == 0 else int((left - sec) * 1e6)
        timeval = array("l", (sec, usec)).tobytes()  # struct timeval: two C longs
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            continue  # the send timeout ran out (or a signal came): the loop checks the deadline
        except OSError as exc:
            raise ClientError("connect", exc.strerror or str(exc), exc.errno) from None
