"""``isolate=yes``: the policy runs in a helper process, so a crash in vendor code fails only
that engine and etmemd keeps serving.

The helper (``python -m etmem_thirdparty_so.isolate FD``) loads the policy with ``inproc`` and
keeps mirror ``Project``/``Engine``/``Task``/``TaskPid`` objects whose ``params`` hold the C
structs. Each hook sends it a snapshot of our objects plus the op to run over a unix socketpair
(length-prefixed pickles; both ends are this package); ``eng_mgt_func`` also passes the write
end of the output pipe (SCM_RIGHTS), so output still streams. When the helper dies, the call
fails with ``EngineError`` naming the signal, and the engine stays failed until it is deleted.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import math
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from etmem_sdk import (
    ConfigError,
    ConfigSection,
    Engine,
    EngineError,
    EtmemError,
    Project,
    Reply,
    Task,
    TaskPid,
)

from . import inproc

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
_PROJECT_FIELDS = (
    "name",
    "scan_type",
    "sysmem_threshold",
    "swapcache_high_wmark",
    "swapcache_low_wmark",
    "loop",
    "interval",
    "sleep",
    "region",
    "start",
    "wmark_set",
)
_ERRORS: dict[str, type[EtmemError]] = {"ConfigError": ConfigError, "EngineError": EngineError}
_tokens = itertools.count(1)

#: Engine key: seconds one op may take in the helper before the helper is killed.
TIMEOUT_KEY = "isolate_timeout"
#: Default for it: below etmemd's own hook deadline (5 s), so a hung policy is killed and named
#: by this engine before the core gives up on the hook.
DEFAULT_TIMEOUT = 4.5
_PR_SET_PDEATHSIG = 1
#: Every helper still running, so that none outlives etmemd (see ``_kill_all``).
_helpers: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


# --- wire: length-prefixed pickles, optionally carrying one fd --------------------------------


def _send(sock: socket.socket, obj: Any, fd: int | None = None) -> None:
    data = pickle.dumps(obj)
    frame = _HEADER.pack(len(data)) + data
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


def _recv(sock: socket.socket) -> tuple[Any, int | None] | None:
    """One message and the fd sent with it; ``None`` at end of stream."""
    head, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 1)
    if not head:
        return None
    rest = _recv_exact(sock, _HEADER.size - len(head)) if len(head) < _HEADER.size else b""
    if rest is None:
        return None
    (length,) = _HEADER.unpack(head + rest)
    data = _recv_exact(sock, length)
    if data is None:
        return None
    return pickle.loads(data), (fds[0] if fds else None)


# --- parent side --------------------------------------------------------------------------------


@dataclass(eq=False)
class IsolatedTask:
    """``task.params`` of a task of an isolated engine: its name in the helper."""

    token: int = field(default_factory=lambda: next(_tokens))


@dataclass(eq=False)
class IsolatedPid:
    """``task_pid.params`` under an isolated engine."""

    token: int = field(default_factory=lambda: next(_tokens))


@dataclass(eq=False)
class IsolatedEngine:
    """``engine.params`` of an ``isolate=yes`` engine: the helper process and its socket."""

    proc: subprocess.Popen
    sock: socket.socket
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: why the helper is gone (None while it runs)
    dead: str | None = None
    #: seconds an op may take before the helper is killed
    timeout: float = DEFAULT_TIMEOUT

    def call(self, engine: Engine, request: dict[str, Any], fd: int | None = None) -> Any:
        """Run one op in the helper and return its result; its ``ConfigError``/``EngineError``
        is raised here."""
        with self.lock:
            if self.dead is not None:
                raise EngineError(f"engine {engine.name}: {self.dead}")
            request["snapshot"] = _snapshot(engine)
            self.sock.settimeout(self.timeout)
            try:
                _send(self.sock, request, fd)
                answer = _recv(self.sock)
            except TimeoutError:
                # A hung policy: nothing else will ever end it, and it holds this engine.
                self.proc.kill()
                self.proc.wait()
                self.dead = (
                    f"the policy process did not finish {request['op']} within "
                    f"{self.timeout:g} s and was killed"
                )
                log.error("engine %s: %s", engine.name, self.dead)
                raise EngineError(f"engine {engine.name}: {self.dead}") from None
            except OSError:
                answer = None
            if answer is None:
                self.dead = _death(self.proc)
                log.error("engine %s: %s", engine.name, self.dead)
                raise EngineError(f"engine {engine.name}: {self.dead}")
        (kind, value), _ = answer
        if kind:
            raise _ERRORS.get(kind, EngineError)(value)
        return value

    def close(self) -> None:
        """End the helper: closing the socket makes it exit; kill it if it does not."""
        self.sock.close()
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _helpers.discard(self.proc)


def _kill_all() -> None:
    """At exit: kill the helpers still running (their engines were never cleared)."""
    for proc in list(_helpers):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_kill_all)


class _Spawner:
    """Starts helpers from one thread that lives as long as the process: the parent-death
    signal a helper asks for fires when the *thread* that forked it ends, and hooks run on
    threads that come and go."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[list[str], int, queue.SimpleQueue[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while True:
            argv, fd, out = self._jobs.get()
            try:
                proc = subprocess.Popen(argv, pass_fds=(fd,), start_new_session=True)
                out.put((proc, None))
            except BaseException as exc:
                out.put((None, exc))

    def popen(self, argv: list[str], fd: int) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="etmem-isolate-spawner", daemon=True
                )
                self._thread.start()
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs.put((argv, fd, out))
        proc, error = out.get()
        if error is not None:
            raise error
        _helpers.add(proc)
        return proc


_spawner = _Spawner()


def _timeout(config: ConfigSection) -> float:
    raw = config.get(TIMEOUT_KEY)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise ConfigError(f"{config.where(TIMEOUT_KEY)}: must be a number of seconds, 0 to 3600")
    return value


def _death(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "the policy process stopped answering and was killed"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the policy process died of {name} (signal {-code})"
    return f"the policy process exited with status {code}"


def _snapshot(engine: Engine) -> dict[str, Any]:
    """What the helper's mirror objects need: the project's fields and the engine's tasks."""
    project = engine.project
    tasks = []
    for task in engine.tasks:
        if not isinstance(task.params, IsolatedTask):
            continue
        pids = [
            (p.params.token, p.pid, p.rt_swapin_rate)
            for p in task.pids
            if isinstance(p.params, IsolatedPid)
        ]
        tasks.append(
            (
                task.params.token,
                task.name,
                task.type,
                task.value,
                task.max_threads,
                task.swap_flag,
                pids,
            )
        )
    fields = {f: getattr(project, f) for f in _PROJECT_FIELDS} if project is not None else None
    return {"engine": engine.name, "project": fields, "tasks": tasks}


def _config(config: ConfigSection) -> dict[str, Any]:
    return {
        "group": config.group,
        "items": dict(config),
        "path": config.path,
        "text": config.text,
        "label": config.label,
    }


def _state(engine: Engine) -> IsolatedEngine:
    return engine.params


def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """Start the helper and load the policy there."""
    timeout = _timeout(config)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # a new session: terminal signals are etmemd's business, not the helper's
        argv = [sys.executable, "-m", __name__, str(child.fileno()), str(os.getpid())]
        proc = _spawner.popen(argv, child.fileno())
    except BaseException:
        parent.close()  # no helper: nothing else will ever close our end
        raise
    finally:
        child.close()
    state = IsolatedEngine(proc=proc, sock=parent, timeout=timeout)
    engine.params = state
    try:
        state.call(engine, {"op": "fill_eng_params", "config": _config(config)})
    except BaseException:
        engine.params = None
        state.close()
        raise


def null_ops(engine: Engine) -> frozenset[str]:
    """The ops the policy left NULL (asked from the helper)."""
    return _state(engine).call(engine, {"op": "null_ops"})


def clear_eng_params(engine: Engine) -> None:
    """``clear_eng_params`` in the helper, then end it."""
    state = _state(engine)
    try:
        if state.dead is None:
            state.call(engine, {"op": "clear_eng_params"})
    finally:
        engine.params = None
        state.close()


def fill_task_params(task: Task, config: ConfigSection) -> None:
    task.params = IsolatedTask()
    try:
        _state(task.engine).call(
            task.engine,
            {"op": "fill_task_params", "task": task.params.token, "config": _config(config)},
        )
    except BaseException:
        task.params = None
        raise


def clear_task_params(task: Task) -> None:
    if not isinstance(task.params, IsolatedTask):
        return
    state = _state(task.engine)
    try:
        if state.dead is None:
            state.call(task.engine, {"op": "clear_task_params", "task": task.params.token})
    finally:
        task.params = None


def start_task(engine: Engine, task: Task) -> None:
    _state(engine).call(engine, {"op": "start_task", "task": task.params.token})


def stop_task(engine: Engine, task: Task) -> None:
    state = _state(engine)
    if state.dead is not None:
        log.error("engine %s: %s; task %s not stopped", engine.name, state.dead, task.name)
        return
    state.call(engine, {"op": "stop_task", "task": task.params.token})


def _task_token(task_pid: TaskPid) -> int | None:
    task = task_pid.task
    return task.params.token if task is not None and isinstance(task.params, IsolatedTask) else None


def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    task_pid.params = IsolatedPid()
    request = {
        "op": "alloc_pid_params",
        "pid": (task_pid.params.token, task_pid.pid, task_pid.rt_swapin_rate),
        "task": _task_token(task_pid),
    }
    try:
        _state(engine).call(engine, request)
    except BaseException:
        task_pid.params = None
        raise


def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    if not isinstance(task_pid.params, IsolatedPid):
        return
    state = _state(engine)
    try:
        if state.dead is None:
            state.call(engine, {"op": "free_pid_params", "pid": task_pid.params.token})
    finally:
        task_pid.params = None


def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    token = task.params.token if task is not None else None
    with inproc.output_pipe(reply) as write_fd:
        _state(engine).call(engine, {"op": "eng_mgt_func", "task": token, "cmd": cmd}, write_fd)


# --- helper side ----------------------------------------------------------------------------


class _Mirror:
    """The helper's copies of the parent's objects; their ``params`` hold the C structs."""

    def __init__(self) -> None:
        self.project = Project(name="")
        self.engine = Engine(name="", kind="thirdparty", project=self.project)
        self.project.engines = [self.engine]
        self.tasks: dict[int, Task] = {}
        self.pids: dict[int, TaskPid] = {}

    def apply(self, snap: dict[str, Any]) -> None:
        self.engine.name = snap["engine"]
        if snap["project"] is not None:
            for key, value in snap["project"].items():
                setattr(self.project, key, value)
        listed = []
        for token, name, type_, value, max_threads, swap_flag, pids in snap["tasks"]:
            task = self.tasks.get(token)
            if task is None:
                task = self.tasks[token] = Task(name, type_, value, engine=self.engine)
            task.name, task.type, task.value = name, type_, value
            task.max_threads, task.swap_flag = max_threads, swap_flag
            task.pids = []
            for pid_token, pid, rate in pids:
                task_pid = self.pids.setdefault(pid_token, TaskPid(pid, task=task))
                task_pid.pid, task_pid.rt_swapin_rate = pid, rate
                task.pids.append(task_pid)
            listed.append(task)
        self.engine.tasks = listed

    def run(self, request: dict[str, Any], fd: int | None) -> Any:
        op = request["op"]
        engine = self.engine
        task = self.tasks.get(request["task"]) if request.get("task") is not None else None
        if "config" in request:
            config = ConfigSection(
                request["config"]["group"],
                request["config"]["items"],
                path=request["config"]["path"],
                text=request["config"]["text"],
                label=request["config"]["label"],
            )
        if op == "null_ops":
            return inproc.null_ops(engine)
        if op == "fill_eng_params":
            inproc.fill_eng_params(engine, config)
        elif op == "clear_eng_params":
            inproc.clear_eng_params(engine)
        elif op == "fill_task_params":
            try:
                inproc.fill_task_params(task, config)
            except BaseException:
                self.tasks.pop(request["task"], None)
                raise
        elif op == "clear_task_params":
            inproc.clear_task_params(task)
            self.tasks.pop(request["task"], None)
        elif op == "start_task":
            inproc.start_task(engine, task)
        elif op == "stop_task":
            inproc.stop_task(engine, task)
        elif op == "alloc_pid_params":
            token, pid, rate = request["pid"]
            task_pid = TaskPid(pid, task=task, rt_swapin_rate=rate)
            self.pids[token] = task_pid
            try:
                inproc.alloc_pid_params(engine, task_pid)
            except BaseException:
                self.pids.pop(token, None)
                raise
        elif op == "free_pid_params":
            task_pid = self.pids.pop(request["pid"], None)
            if task_pid is not None:
                inproc.free_pid_params(engine, task_pid)
        elif op == "eng_mgt_func":
            try:
                inproc.mgt_to_fd(engine, task, request["cmd"], fd)
            finally:
                os.close(fd)
        else:
            raise EngineError(f"unknown request {op!r}")
        return None


def _serve(sock: socket.socket) -> None:
    mirror = _Mirror()
    while (message := _recv(sock)) is not None:
        request, fd = message
        answer: tuple[str, Any]
        try:
            mirror.apply(request.pop("snapshot"))
            answer = ("", mirror.run(request, fd))
        except EtmemError as exc:
            answer = (type(exc).__name__, str(exc))
        except Exception as exc:  # a bug on our side: report it, keep serving
            answer = ("EngineError", f"{type(exc).__name__}: {exc}")
        _send(sock, answer)
        if request["op"] == "clear_eng_params":
            return


def main(argv: list[str] | None = None) -> None:
    """Entry of the helper process: serve requests on the inherited socket until it closes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:  # die with etmemd, even if it is killed and cannot end us
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != int(args[1]):  # etmemd died before the prctl took effect
            os._exit(1)
    sock = socket.socket(fileno=int(args[0]))
    try:
        _serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
