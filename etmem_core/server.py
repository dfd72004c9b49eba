"""etmemd's unix-socket server: accept clients, check they are root, run their request.

Unlike the original (one client at a time, no receive timeout, silent close on a bad request),
requests are read event-driven and answered by a bounded pool of workers, a client that sends
nothing is dropped after 10 s without holding up anyone else, and a malformed request gets a
failure reply that says what is wrong.
"""

from __future__ import annotations

import collections
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

#: Connections open at once (being read, or answered by one of as many workers at most); more
#: wait in the listen backlog (their connect blocks, bounded by their own timeout).
MAX_CLIENTS = 64
#: Workers start as needed, one at first; another only when the queued requests have waited
#: this long (seconds) with no worker taking one -- the workers are all blocked, not merely
#: busy. Quick requests need no more: the store serialises them anyway, and every extra
#: runnable thread costs hand-offs of the interpreter lock.
WORKER_STALL = 0.02
#: Requested listen backlog (the kernel caps it at net.core.somaxconn): room for a burst of
#: clients while the accept loop is busy or paused.
LISTEN_BACKLOG = 4096
#: Connections accepted per second at most, and how many may come at once: any local user can
#: connect, so a connect flood must cost etmemd a bounded share of a CPU (refusing one takes
#: ~8 us: at most ~40 % of a CPU). Root clients queue behind the flood's connections in the
#: kernel's backlog, so the faster those are drained the sooner root is answered.
ACCEPT_RATE = 50000.0
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


class Store(Protocol):
    """What the server needs from the object store (``etmem_core.lifecycle.ObjectStore``)."""

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


class _Reading:
    """A connection whose request the accept loop is still reading."""

    __slots__ = ("sock", "data", "deadline", "settle_at")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.data = b""
        #: give up on the request then (``time.monotonic()``)
        self.deadline = deadline
        #: it has twelve words: decode it then unless more bytes come
        self.settle_at: float | None = None

    def due(self) -> float:
        return self.deadline if self.settle_at is None else min(self.settle_at, self.deadline)


class Server:
    """Serve etmem requests for ``etmemd`` on the abstract socket ``socket_name``.

    ``bind()`` claims the name, ``serve_forever()`` accepts until ``stop()`` (safe to call from
    a signal handler), ``wait_clients(deadline)`` waits for the requests still being answered.

    One thread (the caller of ``serve_forever``) accepts, checks peers and reads every request,
    event-driven, so a silent client costs a descriptor and a timer, not a thread. A request
    read whole goes to a pool of worker threads that run it and write the reply: one worker
    while requests flow, one more whenever the queue has stalled for ``WORKER_STALL`` (a slow
    engine, a slow reader), up to ``max_clients`` so that every open connection can have one.
    The object store serialises its own operations (as the single-threaded original did).
    """

    def __init__(
        self,
        store: Store,
        socket_name: str,
        *,
        timeout: float = TIMEOUT,
        on_listening: Callable[[], None] | None = None,
        max_clients: int = MAX_CLIENTS,
        accept_rate: float = ACCEPT_RATE,
        split_grace: float = SPLIT_GRACE,
    ) -> None:
        self.store = store
        self.socket_name = socket_name
        self.timeout = timeout
        self.on_listening = on_listening
        self._address = socket_address(socket_name)
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = threading.Event()
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
        # requests being read: the accept loop's own, no lock
        self._sel: selectors.BaseSelector | None = None
        self._reading: dict[int, _Reading] = {}
        # connections open (read, queued or being answered) and the worker pool, under _lock
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._open = 0
        #: (connection, request or None for "timed out", when queued)
        self._jobs: collections.deque[tuple[socket.socket, bytes | None, float]] = (
            collections.deque()
        )
        self._workers = 0
        self._idle = 0
        #: when a worker last took a request from the queue
        self._taken_at = 0.0
        self._closing = False
        #: when the accept loop must look at the queue again (a stall), or None
        self._stall_due: float | None = None

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
        """Accept clients and read their requests until :meth:`stop`; workers answer them."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        if self.on_listening is not None:
            self.on_listening()
        with selectors.DefaultSelector() as sel:
            self._sel = sel
            sel.register(self._wake_r, selectors.EVENT_READ)
            listening = False
            while not self._stopping.is_set():
                now = time.monotonic()
                # Stop watching the listener while paused or full: the backlog holds the
                # waiting clients, and a ready listener would make select() spin.
                want = now >= self._pause_until and self._open < self.max_clients
                if want != listening:
                    if want:
                        sel.register(self._sock, selectors.EVENT_READ)
                    else:
                        sel.unregister(self._sock)
                    listening = want
                for key, _ in sel.select(self._next_wait(now, want)):
                    if key.data is not None:
                        self._read(key.data)
                    elif key.fileobj is self._sock:
                        if not self._stopping.is_set():
                            self._accept_some()
                    else:
                        _drain(self._wake_r)
                now = time.monotonic()
                if self._reading:
                    self._expire(now)
                self._stall_due = self._unstall(now)
            self._end_reading()
            self._sel = None
        self._close_listener()

    def stop(self) -> None:
        """Make :meth:`serve_forever` return; fit for a signal handler (a flag and a pipe write)."""
        self._stopping.set()
        self._wake()

    @property
    def wake_fd(self) -> int:
        """The write end of the pipe that wakes :meth:`serve_forever` (non-blocking), fit for
        :func:`signal.set_wakeup_fd`; -1 once closed."""
        return self._wake_w

    def _wake(self) -> None:
        fd = self._wake_w
        if fd < 0:
            return
        try:
            os.write(fd, b"x")
        except OSError:
            pass  # pipe full (a wake-up is already pending) or closed (shutting down)

    def _active(self) -> int:
        """Connections open now: being read, waiting for a worker, or being answered."""
        return self._open

    def wait_clients(self, deadline: float) -> bool:
        """Wait until every accepted client has been answered or dropped, at most until
        ``deadline`` (``time.monotonic()``); True if none is left."""
        with self._lock:
            while self._open > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._all_done.wait(left)
            return True

    def close(self) -> None:
        """Release the listening socket and the wake-up pipe; idle workers end."""
        self._close_listener()
        with self._lock:
            self._closing = True
            self._job_ready.notify_all()
        # forget the numbers first: a worker ending now must not write to a reused fd
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
        """Take up to a batch of connections from the backlog, within the rate bound.

        A flood of non-root peers goes through here at the kernel's pace, so refusing one is
        kept to accept, SO_PEERCRED and close (~13 µs; CPython's private raw-descriptor
        accept would save ~5 µs of that, not worth depending on its internals)."""
        assert self._sock is not None
        budget = min(ACCEPT_BATCH, self._take_tokens())
        accepted = refused = 0
        try:
            while accepted < budget and self._open < self.max_clients:
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._accept_failed(exc)
                    return
                accepted += 1
                if not self._peer_is_root(conn):
                    conn.close()  # refused here, before it costs anything more
                    refused += 1
                    continue
                self._serve(conn)
        finally:
            self._tokens -= accepted
            self.counters["accepted"] += accepted
            self.counters["refused_peers"] += refused
            if accepted:
                self._backoff = 0.0

    def _accept_failed(self, exc: OSError) -> None:
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

    def _take_tokens(self) -> int:
        """How many connections the rate bound allows now; if none, pause until one."""
        now = time.monotonic()
        self._tokens = min(ACCEPT_BURST, self._tokens + (now - self._refill_at) * self.accept_rate)
        self._refill_at = now
        if self._tokens >= 1:
            return int(self._tokens)
        self._pause_until = now + (1 - self._tokens) / self.accept_rate
        return 0

    def _serve(self, conn: socket.socket) -> None:
        """A root client: read its request, then hand it to a worker."""
        log.info("get one connection from etmem")
        conn.setblocking(False)
        with self._lock:
            self._open += 1
        # A client that waited in the backlog has usually sent its request by now: read it at
        # once, and watch the socket only if it is not all there yet.
        self._read(_Reading(conn, time.monotonic() + self.timeout))

    # -- reading requests (the accept loop) ---------------------------------------------------

    def _next_wait(self, now: float, listening: bool) -> float | None:
        """How long select() may sleep: until the next request timer, a possible stall of
        the workers, or the end of a pause."""
        dues = [r.due() for r in self._reading.values()]
        if self._stall_due is not None:
            dues.append(self._stall_due)
        if not listening and now < self._pause_until:
            dues.append(self._pause_until)
        return max(0.0, min(dues) - now) if dues else None

    def _read(self, reading: _Reading) -> None:
        """Take what a client sent. A request has no terminator, so it is whole at the end of
        stream, past REQUEST_MAX, or when it has twelve words and nothing more comes for
        ``split_grace`` seconds (its last value may arrive in pieces)."""
        while True:  # until EAGAIN: a request and the end of stream often come together
            try:
                chunk = reading.sock.recv(REQUEST_MAX + 1 - len(reading.data))
            except (BlockingIOError, InterruptedError):
                if reading.sock.fileno() not in self._reading:
                    self._watch(reading)
                return
            except OSError as exc:  # reset by the client
                log.warning("client connection: %s", exc)
                self._stop_reading(reading)
                reading.sock.close()
                self._release()
                return
            reading.data += chunk
            if not chunk or len(reading.data) > REQUEST_MAX:
                self._request_read(reading)
                return
            if request_complete(reading.data):
                reading.settle_at = time.monotonic() + self.split_grace

    def _expire(self, now: float) -> None:
        for reading in [r for r in self._reading.values() if r.due() <= now]:
            # past its deadline without twelve words: answered "no request received in time"
            self._request_read(reading, timed_out=reading.settle_at is None)

    def _watch(self, reading: _Reading) -> None:
        assert self._sel is not None
        self._reading[reading.sock.fileno()] = reading
        self._sel.register(reading.sock, selectors.EVENT_READ, reading)

    def _stop_reading(self, reading: _Reading) -> None:
        assert self._sel is not None
        if self._reading.pop(reading.sock.fileno(), None) is not None:
            self._sel.unregister(reading.sock)

    def _request_read(self, reading: _Reading, timed_out: bool = False) -> None:
        """Reading is over (whole, ended or timed out): hand the request to a worker."""
        self._stop_reading(reading)
        if timed_out:
            self._submit(reading.sock, None)
        elif reading.data:
            self._submit(reading.sock, reading.data)
        else:
            log.warning("client closed without sending a request")
            reading.sock.close()
            self._release()

    def _end_reading(self) -> None:
        """At stop: requests that look whole are still answered, the others are told why not."""
        for reading in list(self._reading.values()):
            # Take what has arrived but is unread: it may complete the request, and closing a
            # unix socket with unread bytes resets it, so the client would never see the reply.
            self._read(reading)
        for reading in list(self._reading.values()):
            self._stop_reading(reading)
            if request_complete(reading.data):
                self._submit(reading.sock, reading.data)
                continue
            with reading.sock:
                try:
                    self._send_failure(
                        reading.sock, OptError(OptCode.OPT_INTER_ERR, "etmemd is shutting down")
                    )
                except OSError:
                    pass
            self._release()

    # -- answering requests (the workers) -----------------------------------------------------

    def _submit(self, conn: socket.socket, data: bytes | None) -> None:
        job = (conn, data, time.monotonic())
        with self._lock:
            self._jobs.append(job)
            self._job_ready.notify()
            start = self._workers == 0 or self._stalled(job[2])
            if start:
                self._workers += 1
        if start and not self._start_worker():
            with self._lock:
                orphaned = self._workers == 0 and any(j is job for j in self._jobs)
                if orphaned:  # no worker will ever take it
                    self._jobs.remove(job)
            if orphaned:
                conn.close()
                self._release()

    def _stalled(self, now: float) -> bool:
        """Whether queued requests wait on workers that are all blocked (a hung engine, a
        slow reader, the store held by a big ``obj add``) rather than merely busy; the
        caller holds ``_lock``."""
        return (
            bool(self._jobs)
            and self._idle == 0
            and self._workers < self.max_clients
            and now - max(self._taken_at, self._jobs[0][2]) >= WORKER_STALL
        )

    def _unstall(self, now: float) -> float | None:
        """Add a worker if the queue is stalled; when it may stall next (``time.monotonic()``)."""
        with self._lock:
            if not self._jobs or self._idle:
                return None
            start = self._stalled(now)
            if start:
                self._workers += 1
            due = max(self._taken_at, self._jobs[0][2]) + WORKER_STALL
        if start:
            self._start_worker()
            return now + WORKER_STALL
        return due

    def _start_worker(self) -> bool:
        """Start one worker (counted in ``_workers`` by the caller); False if none could be."""
        try:
            threading.Thread(target=self._work, name="etmemd-client", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: the queue waits for the others
            log.error("cannot serve a client: %s", exc)
            with self._lock:
                self._workers -= 1
            return False
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    if self._closing:
                        self._workers -= 1
                        return
                    self._idle += 1
                    self._job_ready.wait()
                    self._idle -= 1
                conn, data, _ = self._jobs.popleft()
                self._taken_at = time.monotonic()
            self._answer(conn, data)

    def _release(self) -> None:
        """One connection fewer; the accept loop listens again if it had stopped when full."""
        with self._lock:
            self._open -= 1
            was_full = self._open == self.max_clients - 1
            if self._open == 0:
                self._all_done.notify_all()
        if was_full:
            self._wake()

    def _answer(self, conn: socket.socket, data: bytes | None) -> None:
        try:
            with conn:
                if data is None:
                    log.warning("client sent no complete request within %g s", self.timeout)
                    self._send_failure(
                        conn, OptError(OptCode.OPT_INVAL, "no request received in time")
                    )
                else:
                    self._handle(conn, data)
                _discard_unread(conn)
        except OSError as exc:  # client went away mid-reply, send timed out, ...
            log.warning("client connection: %s", exc)
        except Exception:  # a bug must cost one request, never the daemon
            log.exception("unexpected error while serving a client")
        finally:
            self._release()

    def _peer_is_root(self, conn: socket.socket) -> bool:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
        if uid != 0 or gid != 0:
            self._refused_log(
                logging.ERROR,
                "client socket connect failed, permission denied (pid %d uid %d gid %d)",
                pid,
                uid,
                gid,
            )
            return False
        return True

    def _handle(self, conn: socket.socket, untrusted: bytes) -> None:
        log.debug("etmemd get request: %r", untrusted)
        try:
            request = decode_request(untrusted)
        except ProtocolError as exc:
            log.error("malformed request: %s", exc)
            self._send_failure(conn, OptError(OptCode.OPT_INVAL, f"malformed request: {exc}"))
            return
        try:
            out = self._dispatch(conn, request)
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
        self._send(conn, out + reply_end(None))

    def _send(self, conn: socket.socket, data: bytes) -> None:
        """Send all of ``data`` on the non-blocking ``conn`` within the timeout: a reply
        usually fits the socket buffer, so one send() does, without a poll() before it."""
        try:
            sent = conn.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):  # a slow reader, or a big reply
            conn.settimeout(self.timeout)
            try:
                conn.sendall(memoryview(data)[sent:])
            finally:
                conn.setblocking(False)

    def _send_failure(self, conn: socket.socket, err: OptError) -> None:
        # The reason goes out as one text line before the fixed error text: the C client prints
        # it as it prints any output, and the error line stays the one the original sends.
        head = b""
        if err.reason and err.reason != err.code.text:
            head = clean_output(f"etmemd: {safe_text(err.reason)}".encode()) + b"\n"
        self._send(conn, head + reply_end(err.code.text))

    def _dispatch(self, conn: socket.socket, req: Request) -> bytes:
        """Run ``req``; what it returns goes out with the success marker, in one send."""

        def stream(data: bytes) -> None:
            self._send(conn, data)

        cmd = Cmd(req.cmd)
        if cmd in (Cmd.OBJ_ADD, Cmd.OBJ_DEL):
            if req.file_name is None:
                raise OptError(OptCode.OPT_INVAL, "no configuration file given")
            if cmd is Cmd.OBJ_ADD:
                self.store.obj_add(req.file_name)
            else:
                self.store.obj_del(req.file_name)
        elif cmd in (Cmd.PROJ_START, Cmd.PROJ_STOP):
            if req.proj_name is None:
                raise OptError(OptCode.OPT_INVAL, "no project name given")
            if cmd is Cmd.PROJ_START:
                self.store.project_start(req.proj_name)
            else:
                self.store.project_stop(req.proj_name)
        elif cmd is Cmd.PROJ_SHOW:
            # Collect first, send after: a slow reader must not hold the store's lock.
            if req.eng_cmd == SHOW_JSON:
                doc = self.store.project_show_json(req.proj_name)
                text = doc if isinstance(doc, str) else _to_json(doc)
                out = text.encode() if text.endswith("\n") else text.encode() + b"\n"
            else:
                buffer = BufferReply()
                self.store.project_show(req.proj_name, buffer)
                out = bytes(buffer.data)
            return clean_output(out)
        else:  # Cmd.ENG_CMD: engine output streams straight to the client
            if req.proj_name is None or req.eng_name is None or req.eng_cmd is None:
                raise OptError(
                    OptCode.OPT_INVAL, "engine command needs project, engine and command"
                )
            self.store.engine_cmd(
                req.proj_name, req.eng_name, req.task_name, req.eng_cmd, Reply(stream)
            )
        return b""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass  # empty (EAGAIN)


def _discard_unread(conn: socket.socket) -> None:
    """Drop what the client sent beyond its request (an oversized one): closing a unix socket
    with unread input resets the connection, and the client could lose our reply."""
    for _ in range(64):
        try:
            if not conn.recv(4096):
                return
        except OSError:
            return


def _to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)
