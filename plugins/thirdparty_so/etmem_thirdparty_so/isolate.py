"""``isolate=yes``: the policy runs in a helper process, so a crash in vendor code fails only
that engine and etmemd keeps serving.  This module is etmemd's side: the engine's hooks.

The helper (:mod:`.isolate_helper`) loads the policy with ``inproc`` and keeps mirror
``Project``/``Engine``/``Task``/``TaskPid`` objects whose ``params`` hold the C structs. Each
hook sends it a snapshot of our objects plus the op to run over a unix socketpair
(:mod:`.isolate_wire`); ``eng_mgt_func`` also passes the write end of the output pipe
(SCM_RIGHTS), so output still streams. When the helper dies, the call fails with
``EngineError`` naming the signal, and the engine stays failed until it is deleted.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import queue
import signal
import socket
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
    Reply,
    Task,
    TaskPid,
)

from . import inproc
from .cstate import engine_of
from .isolate_wire import ERRORS, recv, send

log = logging.getLogger(__name__)

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
_tokens = itertools.count(1)
#: The module the helper process runs (``python -m``).
_HELPER = f"{__package__}.isolate_helper"

#: Engine key: seconds one op may take in the helper before the helper is killed.
TIMEOUT_KEY = "isolate_timeout"
#: Default for it: below etmemd's own hook deadline (5 s), so a hung policy is killed and named
#: by this engine before the core gives up on the hook.
DEFAULT_TIMEOUT = 4.5
#: Every helper still running, so that none outlives etmemd (see ``_kill_all``).
_helpers: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


@dataclass(eq=False)
class IsolatedTaskParams:
    """``task.params`` of a task of an isolated engine: its name in the helper."""

    token: int = field(default_factory=lambda: next(_tokens))


@dataclass(eq=False)
class IsolatedPidParams:
    """``task_pid.params`` under an isolated engine."""

    token: int = field(default_factory=lambda: next(_tokens))


@dataclass(eq=False)
class IsolatedEngineParams:
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
                send(self.sock, request, fd)
                answer = recv(self.sock)
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
            raise ERRORS.get(kind, EngineError)(value)
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
        if not isinstance(task.params, IsolatedTaskParams):
            continue
        pids = [
            (p.params.token, p.pid, p.rt_swapin_rate)
            for p in task.pids
            if isinstance(p.params, IsolatedPidParams)
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


def _state(engine: Engine) -> IsolatedEngineParams:
    return engine.params


def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """Start the helper and load the policy there."""
    timeout = _timeout(config)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # a new session: terminal signals are etmemd's business, not the helper's
        argv = [sys.executable, "-m", _HELPER, str(child.fileno()), str(os.getpid())]
        proc = _spawner.popen(argv, child.fileno())
    except BaseException:
        parent.close()  # no helper: nothing else will ever close our end
        raise
    finally:
        child.close()
    state = IsolatedEngineParams(proc=proc, sock=parent, timeout=timeout)
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
    task.params = IsolatedTaskParams()
    try:
        engine = engine_of(task)
        _state(engine).call(
            engine,
            {"op": "fill_task_params", "task": task.params.token, "config": _config(config)},
        )
    except BaseException:
        task.params = None
        raise


def clear_task_params(task: Task) -> None:
    if not isinstance(task.params, IsolatedTaskParams):
        return
    engine = engine_of(task)
    state = _state(engine)
    try:
        if state.dead is None:
            state.call(engine, {"op": "clear_task_params", "task": task.params.token})
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
    return (
        task.params.token
        if task is not None and isinstance(task.params, IsolatedTaskParams)
        else None
    )


def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    task_pid.params = IsolatedPidParams()
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
    if not isinstance(task_pid.params, IsolatedPidParams):
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
