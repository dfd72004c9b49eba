"""Talk to an etmemd: connect, send one request, stream the reply to the caller."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import RECV_CHUNK, TIMEOUT, ReplyDecoder, Request, encode_request, socket_address


class ClientError(Exception):
    """The exchange with etmemd failed before a complete reply arrived.

    ``stage`` is ``"connect"``, ``"send"`` or ``"recv"``; ``errno`` is set for socket errors.
    """

    def __init__(self, stage: str, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = errno


@dataclass
class Result:
    """How a complete reply ended: ``success`` is the marker (0xFF true, 0xFE false)."""

    success: bool


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
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as exc:
            raise ClientError("connect", exc.strerror or str(exc), exc.errno) from None
        try:
            sock.sendall(data)
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
