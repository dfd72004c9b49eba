"""etmemd's unix-socket server: accept clients, check they are root, run their request.

Unlike the original (one client at a time, no receive timeout, silent close on a bad request),
every client gets its own thread, a client that sends nothing is dropped after 10 s without
holding up anyone else, and a malformed request gets a failure reply that says what is wrong.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from etmem_sdk import BufferReply, Reply

from .errors import OptCode, OptError
from .protocol import (
    REQUEST_MAX,
    SHOW_JSON,
    SPLIT_GRACE,
    TIMEOUT,
    Cmd,
    ProtocolError,
    Request,
    clean_output,
    decode_request,
    reply_end,
    request_complete,
    safe_text,
    socket_address,
)

log = logging.getLogger("etmemd")

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}

#: Clients served at once; more wait in the listen backlog (their connect blocks, bounded by
#: their own timeout) instead of each costing a thread.
MAX_CLIENTS = 64
#: Requested listen backlog (the kernel caps it at net.core.somaxconn): room for a burst of
#: clients while the accept loop is busy or paused.
LISTEN_BACKLOG = 4096
#: Connections accepted per second at most, and how many may come at once: any local user can
#: connect, so a connect flood must cost etmemd a bounded share of a CPU.
ACCEPT_RATE = 20000.0
ACCEPT_BURST = 512
#: Connections taken from the backlog per wake-up of the accept loop.
ACCEPT_BATCH = 64
#: A refused peer or a failing accept is logged at most once per this many seconds.
REFUSED_LOG_INTERVAL = 10.0
#: Back-off while accept fails for want of descriptors or memory: first and longest pause.
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _RateLimitedLog:
    """Log a repeated event at most once per ``interval`` seconds, with the count in between,
    so a flood of them costs neither CPU nor log space."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" ({self._suppressed} more like it in the last {self.interval:g} s)"
            self._suppressed = 0
        self._next = now + self.interval
        log.log(level, msg, *args)


class Lifecycle(Protocol):
    """What the server needs from the object store (``etmem_core.lifecycle.Etmemd``)."""

    def obj_add(self, path: str) -> Any: ...
    def obj_del(self, path: str) -> Any: ...
    def project_start(self, name: str) -> Any: ...
    def project_stop(self, name: str) -> Any: ...
    def project_show(self, name: str | None, reply: Reply) -> Any: ...
    def project_show_json(self, name: str | None) -> Any: ...
    def engine_cmd(
        self, project: str, engine: str, task: str | None, cmd: str, reply: Reply
    ) -> Any: ...


class AddressInUse(OSError):
    """Another process (usually another etmemd) already listens on the socket name."""


class Server:
    """Serve etmem requests for ``etmemd`` on the abstract socket ``socket_name``.

    ``bind()`` claims the name, ``serve_forever()`` accepts until ``stop()`` (safe to call from
    a signal handler), ``wait_clients(deadline)`` joins the client threads still running.
    The object store serialises its own operations (as the single-threaded original did);
    concurrency here is about I/O, so a slow or silent client no longer blocks the others.
    """

    def __init__(
        self,
        etmemd: Lifecycle,
        socket_name: str,
        *,
        timeout: float = TIMEOUT,
        on_listening: Callable[[], None] | None = None,
        max_clients: int = MAX_CLIENTS,
        accept_rate: float = ACCEPT_RATE,
        split_grace: float = SPLIT_GRACE,
    ) -> None:
        self.etmemd = etmemd
        self.socket_name = socket_name
        self.timeout = timeout
        self.on_listening = on_listening
        self._address = socket_address(socket_name)
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = threading.Event()
        self._clients: set[threading.Thread] = set()
        self._clients_lock = threading.Lock()
        self.max_clients = max_clients
        self.split_grace = split_grace
        self.accept_rate = accept_rate
        self._tokens = float(ACCEPT_BURST)
        self._refill_at = time.monotonic()
        #: no accept before this ``time.monotonic()`` (descriptor exhaustion, rate bound)
        self._pause_until = 0.0
        self._backoff = 0.0
        #: what happened to connections so far (a metrics endpoint may export these)
        self.counters = {"accepted": 0, "refused_peers": 0, "accept_errors": 0}
        self._refused_log = _RateLimitedLog(REFUSED_LOG_INTERVAL)
        self._accept_err_log = _RateLimitedLog(REFUSED_LOG_INTERVAL)

    # -- listening socket ---------------------------------------------------------------------

    def bind(self) -> None:
        """Bind and listen; raise :class:`AddressInUse` if the name is taken."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self._address)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    exc.errno, f"socket name {self.socket_name!r} is already in use"
                ) from None
            raise
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)  # the loop drains the backlog until EAGAIN
        self._sock = sock
        log.info("listening on abstract socket @%s", self.socket_name)

    def serve_forever(self) -> None:
        """Accept clients until :meth:`stop`; each client is served on its own thread."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        if self.on_listening is not None:
            self.on_listening()
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            listening = False
            while not self._stopping.is_set():
                now = time.monotonic()
                # Stop watching the listener while paused or full: the backlog holds the
                # waiting clients, and a ready listener would make select() spin.
                want = now >= self._pause_until and self._active() < self.max_clients
                if want != listening:
                    if want:
                        sel.register(self._sock, selectors.EVENT_READ)
                    else:
                        sel.unregister(self._sock)
                    listening = want
                wait = None if want or now >= self._pause_until else self._pause_until - now
                for key, _ in sel.select(wait):
                    if key.fileobj is self._sock and not self._stopping.is_set():
                        self._accept_some()
                    elif key.fileobj == self._wake_r:
                        _drain(self._wake_r)
        self._close_listener()

    def stop(self) -> None:
        """Make :meth:`serve_forever` return; fit for a signal handler (a flag and a pipe write)."""
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        fd = self._wake_w
        if fd < 0:
            return
        try:
            os.write(fd, b"x")
        except OSError:
            pass  # pipe full (a wake-up is already pending) or closed (shutting down)

    def _active(self) -> int:
        with self._clients_lock:
            return len(self._clients)

    def wait_clients(self, deadline: float) -> bool:
        """Join client threads until ``deadline`` (``time.monotonic()``); True if all ended."""
        with self._clients_lock:
            threads = list(self._clients)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def close(self) -> None:
        """Release the listening socket and the wake-up pipe."""
        self._close_listener()
        # forget the numbers first: a client thread ending now must not write to a reused fd
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _close_listener(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _accept_some(self) -> None:
        """Take up to a batch of connections from the backlog, within the rate bound."""
        assert self._sock is not None
        for _ in range(ACCEPT_BATCH):
            if self._active() >= self.max_clients or not self._take_token():
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["accept_errors"] += 1
                if exc.errno in _RESOURCE_ERRNOS:
                    # Retrying at once would spin: the condition lasts until something closes.
                    self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
                    self._pause_until = time.monotonic() + self._backoff
                    self._accept_err_log(
                        logging.ERROR, "accept failed: %s; pausing %g s", exc, self._backoff
                    )
                else:  # ECONNABORTED and the like: that connection only
                    self._accept_err_log(logging.WARNING, "accept failed: %s", exc)
                return
            self._backoff = 0.0
            self.counters["accepted"] += 1
            conn.setblocking(True)
            if not self._peer_is_root(conn):
                conn.close()  # refused here, before it costs a thread
                continue
            self._start_client(conn)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(ACCEPT_BURST, self._tokens + (now - self._refill_at) * self.accept_rate)
        self._refill_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._pause_until = now + (1 - self._tokens) / self.accept_rate
        return False

    def _start_client(self, conn: socket.socket) -> None:
        thread = threading.Thread(target=self._serve_client, args=(conn,), daemon=True)
        with self._clients_lock:
            self._clients.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: drop this client, keep listening
            log.error("cannot serve a client: %s", exc)
            with self._clients_lock:
                self._clients.discard(thread)
            conn.close()

    # -- one client ---------------------------------------------------------------------------

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(self.timeout)
                log.info("get one connection from etmem")
                self._handle(conn)
                _discard_unread(conn)
        except OSError as exc:  # client went away mid-reply, send timed out, ...
            log.warning("client connection: %s", exc)
        except Exception:  # a bug must cost one request, never the daemon
            log.exception("unexpected error while serving a client")
        finally:
            with self._clients_lock:
                self._clients.discard(threading.current_thread())
            self._wake()  # the accept loop may be waiting for a free client slot

    def _peer_is_root(self, conn: socket.socket) -> bool:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
        if uid != 0 or gid != 0:
            self.counters["refused_peers"] += 1
            self._refused_log(
                logging.ERROR,
                "client socket connect failed, permission denied (pid %d uid %d gid %d)",
                pid,
                uid,
                gid,
            )
            return False
        return True

    def _read_request(self, conn: socket.socket) -> bytes:
        """Read one request, to the end of stream or until it has twelve words and nothing
        more comes for ``split_grace`` seconds (its last value may arrive in pieces)."""
        data = b""
        deadline = time.monotonic() + self.timeout
        while len(data) <= REQUEST_MAX:
            left = max(0.001, deadline - time.monotonic())
            settling = request_complete(data)
            conn.settimeout(min(left, self.split_grace) if settling else left)
            try:
                chunk = conn.recv(REQUEST_MAX + 1 - len(data))
            except TimeoutError:
                if settling:
                    return data
                raise
            if not chunk:
                return data
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        try:
            untrusted = self._read_request(conn)
        except TimeoutError:
            log.warning("client sent no complete request within %g s", self.timeout)
            self._send_failure(conn, OptError(OptCode.OPT_INVAL, "no request received in time"))
            return
        conn.settimeout(self.timeout)
        log.debug("etmemd get request: %r", untrusted)
        if not untrusted:
            log.warning("client closed without sending a request")
            return
        try:
            request = decode_request(untrusted)
        except ProtocolError as exc:
            log.error("malformed request: %s", exc)
            self._send_failure(conn, OptError(OptCode.OPT_INVAL, f"malformed request: {exc}"))
            return
        try:
            self._dispatch(conn, request)
        except OptError as exc:
            log.error("%s (%s)", exc.reason, exc.code.name)
            self._send_failure(conn, exc)
            return
        except OSError:
            raise  # the client's socket failed: nothing more can reach it
        except Exception as exc:
            log.exception("request failed with an unexpected error")
            self._send_failure(conn, OptError(OptCode.OPT_INTER_ERR, f"internal error: {exc}"))
            return
        conn.sendall(reply_end(None))

    def _send_failure(self, conn: socket.socket, err: OptError) -> None:
        # The reason goes out as one text line before the fixed error text: the C client prints
        # it as it prints any output, and the error line stays the one the original sends.
        head = b""
        if err.reason and err.reason != err.code.text:
            head = clean_output(f"etmemd: {safe_text(err.reason)}".encode()) + b"\n"
        conn.sendall(head + reply_end(err.code.text))

    def _dispatch(self, conn: socket.socket, req: Request) -> None:
        def stream(data: bytes) -> None:
            conn.sendall(data)

        cmd = Cmd(req.cmd)
        if cmd in (Cmd.OBJ_ADD, Cmd.OBJ_DEL):
            if req.file_name is None:
                raise OptError(OptCode.OPT_INVAL, "no configuration file given")
            if cmd is Cmd.OBJ_ADD:
                self.etmemd.obj_add(req.file_name)
            else:
                self.etmemd.obj_del(req.file_name)
        elif cmd in (Cmd.PROJ_START, Cmd.PROJ_STOP):
            if req.proj_name is None:
                raise OptError(OptCode.OPT_INVAL, "no project name given")
            if cmd is Cmd.PROJ_START:
                self.etmemd.project_start(req.proj_name)
            else:
                self.etmemd.project_stop(req.proj_name)
        elif cmd is Cmd.PROJ_SHOW:
            # Collect first, send after: a slow reader must not hold the store's lock.
            if req.eng_cmd == SHOW_JSON:
                doc = self.etmemd.project_show_json(req.proj_name)
                text = doc if isinstance(doc, str) else _to_json(doc)
                out = text.encode() if text.endswith("\n") else text.encode() + b"\n"
            else:
                buffer = BufferReply()
                self.etmemd.project_show(req.proj_name, buffer)
                out = bytes(buffer.data)
            if out:
                conn.sendall(clean_output(out))
        else:  # Cmd.ENG_CMD: engine output streams straight to the client
            if req.proj_name is None or req.eng_name is None or req.eng_cmd is None:
                raise OptError(
                    OptCode.OPT_INVAL, "engine command needs project, engine and command"
                )
            self.etmemd.engine_cmd(
                req.proj_name, req.eng_name, req.task_name, req.eng_cmd, Reply(stream)
            )


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass  # empty (EAGAIN)


def _discard_unread(conn: socket.socket) -> None:
    """Drop what the client sent beyond its request (an oversized one): closing a unix socket
    with unread input resets the connection, and the client could lose our reply."""
    conn.setblocking(False)
    for _ in range(64):
        try:
            if not conn.recv(4096):
                return
        except OSError:
            return


def _to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)
